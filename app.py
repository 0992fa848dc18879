"""Depth Anything Studio: `python app.py` serves the studio on http://127.0.0.1:7860.

Wiring only: parse flags, build the pipeline services, build the UI, launch.
    python app.py                                  # Depth-Anything-V2-Small from the Hub (or its cache)
    python app.py --checkpoint depth_anything_v2_vits.pth --port 7861
    python app.py --auth me:secret --host 0.0.0.0  # a login for everything
When the weights cannot be had the studio still starts, with untrained weights and a banner.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys

from studio.gpu import spaces_available

if spaces_available():      # ZeroGPU wants `spaces` imported before torch
    import spaces  # noqa: F401

from pipeline.runtime.registry import CHOICES  # noqa: E402
from pipeline.services.curation_service import CurationService  # noqa: E402
from pipeline.services.depth_models import registry_choices, store_choices  # noqa: E402
from pipeline.services.depth_service import DepthService  # noqa: E402
from pipeline.services.training_service import TrainingService  # noqa: E402
from pipeline.settings import StudioSettings  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.store.gc import PeriodicCollector  # noqa: E402
from studio.app import Services, build_app, launch_kwargs  # noqa: E402


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes user:password")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Depth Anything Studio")
    p.add_argument("--checkpoint", help="checkpoint file or registry name (default depth-anything-v2-small)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--data-dir", help="data folder (default $DA_STUDIO_DATA, /data on a Space, else ./data)")
    p.add_argument("--import-root", help="server folder the page may import from (default <data folder>/import)")
    p.add_argument("--db", help="label database file (default <data folder>/studio.db)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", choices=CHOICES, help="what runs the network: auto (default: torch on a GPU, "
                   "OpenVINO > ONNX Runtime > torch on a CPU), torch, torch-compile, openvino, onnxruntime")
    p.add_argument("--auth", type=parse_auth, help="require a login, user:password")
    p.add_argument("--login-attempts", type=int, default=5, metavar="N",
                   help="with --auth: failed logins of a name allowed before it must wait (1 s, doubling up to "
                        "5 min); 0 = no limit (default 5)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    return p.parse_args(argv)


def build_services(settings: StudioSettings) -> Services:
    """The three services the tabs call, over one label store."""
    depth = DepthService(settings, sources=[registry_choices, store_choices(settings.database)])
    loaded = depth.model()                 # load the default now: downloads on first start, else cached
    if loaded.notice:
        print(f"WARNING: {loaded.notice}", file=sys.stderr, flush=True)
    store = label_store(settings)
    return Services(depth=depth, curation=CurationService(store, settings),
                    training=training_service(settings, depth, store))


def label_store(settings: StudioSettings) -> Store:
    """The label store, with the collector that removes files nothing refers to (safe beside writers)."""
    store = Store(settings.database)
    PeriodicCollector(store).start()
    return store


def training_service(settings: StudioSettings, depth: DepthService, store: Store) -> TrainingService:
    """The train tab's service (pipeline/services/training_service.py): runs, progress, teacher vs student."""
    service = TrainingService(store, settings, depth)
    service.startup()                      # jobs and runs that ended while the studio was down
    return service


def login_check(args: argparse.Namespace):
    """What Gradio's `auth` gets: None, the (user, password) pair, or it behind a failed-login back-off."""
    if args.auth is None or args.login_attempts <= 0:
        return args.auth
    from studio.login import LoginLimiter
    return LoginLimiter(dict([args.auth]), free_failures=args.login_attempts)


def settle_heap() -> None:
    """Collect once, then hide what startup made from the garbage collector (`gc.freeze`).

    torch, Gradio and the model leave ~630k long-lived objects; every full collection walks them
    all (0.7-1.2 s on 2 cores), pausing whatever request is running. One such pause during
    launch() failed Gradio's own first request to the page (3 s timeout) and app.py exited with
    "When localhost is not accessible, a shareable link must be created". Frozen objects are
    never freed, which is right for these: they live as long as the process."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = StudioSettings.from_env().with_overrides(
        data_dir=args.data_dir, db_path=args.db, checkpoint=args.checkpoint, device=args.device, backend=args.backend,
        import_root=args.import_root)
    services = build_services(settings)
    demo = build_app(services)
    settle_heap()
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=login_check(args),
                **launch_kwargs(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
