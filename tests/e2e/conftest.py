"""Launch app.py as a real server for the HTTP and browser tests (one process per configuration per session)."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UPLOAD_CAP_MB = 5
CHROMIUM = "/usr/bin/chromium"          # Debian's package; a Playwright-downloaded browser cannot be had here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]      # WebGL via SwiftShader


def _load_images_module():
    path = ROOT / "tests" / "studio" / "images.py"
    spec = importlib.util.spec_from_file_location("studio_test_images_e2e", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_images = _load_images_module()
small_rgb, bad_inputs, odd_but_valid_inputs = _images.small_rgb, _images.bad_inputs, _images.odd_but_valid_inputs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    proc: subprocess.Popen
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_app(workdir: Path, args: list[str], extra_env: dict | None = None, timeout: float = 180) -> RunningApp:
    port = free_port()
    data_dir = workdir / "data"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(workdir / "gradio"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    log_path = workdir / "app.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data-dir", str(data_dir),
                             *args], cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    app = RunningApp(f"http://127.0.0.1:{port}/", proc, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{app.log()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2) as r:
                if r.status == 200:
                    return app
        except OSError:
            time.sleep(0.25)
    stop_app(app)
    raise RuntimeError(f"app.py did not answer within {timeout} s:\n{app.log()}")


def stop_app(app: RunningApp) -> None:
    app.proc.terminate()
    try:
        app.proc.wait(10)
    except subprocess.TimeoutExpired:
        app.proc.kill()


@pytest.fixture(scope="session")
def studio(recipe_pth, tmp_path_factory):
    """The studio serving the recipe vits weights (the official layout; reference numbers known)."""
    app = start_app(tmp_path_factory.mktemp("studio"), ["--checkpoint", str(recipe_pth)],
                    {"DA_STUDIO_MAX_UPLOAD_MB": str(UPLOAD_CAP_MB)})
    yield app
    stop_app(app)


@pytest.fixture(scope="session")
def studio_no_weights(tmp_path_factory):
    """The studio with its default Hub checkpoint, an empty Hugging Face cache and the network unreachable.

    Not HF_HUB_OFFLINE: the Hub must be found unreachable. All HTTPS goes through a proxy on a closed
    local port (connections refused), so nothing leaves the machine and the answer is deterministic.
    """
    work = tmp_path_factory.mktemp("studio_offline")
    app = start_app(work, [], {"HF_HOME": str(work / "hf"), "HF_HUB_CACHE": str(work / "hf" / "hub"),
                               "HF_HUB_OFFLINE": "0", "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",
                               "HTTP_PROXY": f"http://127.0.0.1:{free_port()}", "NO_PROXY": "127.0.0.1,localhost"})
    yield app
    stop_app(app)


@pytest.fixture
def client_for(tmp_path):
    """gradio_client.Client for an app, downloading into a private folder, made as the README says:
    one verified SSL context for all its HTTP calls (gradio_client otherwise builds one per call)."""
    import httpx
    from gradio_client import Client

    def make(app: RunningApp):
        return Client(app.url, download_files=str(tmp_path / "downloads"), verbose=False,
                      ssl_verify=httpx.create_ssl_context())
    return make


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for the whole session (../shared/BROWSER-TESTS.md). Missing: skip, but fail under CI."""
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(chromium):
    """`open_page(height=1100, width=1400)` -> a fresh page; the test fails if any page raised a
    JavaScript error."""
    contexts, errors = [], []

    def make(height: int = 1100, width: int = 1400):
        context = chromium.new_context(viewport={"width": width, "height": height})
        context.add_init_script("delete Navigator.prototype.gpu;")   # Babylon falls back to WebGL quietly
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        contexts.append(context)
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], errors


@pytest.fixture(scope="session")
def app_runner():
    """`start_app` / `stop_app` for test modules that launch an app of their own configuration."""
    import types
    return types.SimpleNamespace(start=start_app, stop=stop_app)


@pytest.fixture(scope="session")
def vitt_checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained `vitt` checkpoint in the project format (fast to load and run)."""
    import torch

    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(0)
    return save_checkpoint(untrained_model(ModelConfig(encoder="vitt")).model,
                           tmp_path_factory.mktemp("vitt") / "vitt.safetensors", model_id="tiny-vitt")
