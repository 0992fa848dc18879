"""Training throughput (images/s) and peak memory of the real recipe, vits at 518x518.

    python benchmarks/bench_train.py                        # CPU, and CUDA when available
    python benchmarks/bench_train.py --steps 3 --batch-size 2 --encoder vits --threads 2
    python benchmarks/bench_train.py --devices cuda --batch-size 8 --ratio 1:2

What is measured: full optimiser steps of `pipeline.train.recipe.Recipe` (data loading and
augmentation, teacher-free labelled + pseudo-labelled batches with CutMix, student forward and
backward, frozen-DINOv2 feature alignment, AdamW), after one warm-up step; images/s = images
per step / median step time. Peak memory: CUDA max_memory_allocated on GPU; on the CPU the
process's peak resident set size (includes Python, torch and the data). Untrained weights
(speed does not depend on their values); data: synthetic 600x800 scenes.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.train.recipe import Recipe  # noqa: E402
from pipeline.train.synthetic import write_scenes  # noqa: E402
from pipeline.train.train_config import TrainConfig, parse_ratio  # noqa: E402


def bench(device: str, args, data: Path, out: Path) -> dict:
    cfg = TrainConfig(out_dir=str(out / device), data_dir=str(data), encoder=args.encoder, steps=args.steps + 1,
                      batch_size=args.batch_size, input_size=args.input_size, labelled_ratio=args.ratio,
                      save_every=10_000, device=device, student_init="random",   # speed only: no weights needed
                      feature_target="init")
    # half the scenes as "accepted pseudo-labels": the pseudo pool gets strong perturbations + CutMix
    recipe = Recipe(cfg, log=lambda s: None)
    recipe.setup()
    for it in recipe.pools["labelled"][::2]:
        it.pool = "pseudo"
    from pipeline.train.batches import MixedSampler
    from pipeline.train.data import pools
    recipe.pools = pools(recipe.items)
    recipe.sampler = MixedSampler(recipe.pools, cfg.labelled_ratio, cfg.seed)
    if recipe.dinov2 is None:
        from pipeline.train.student import build_frozen_dinov2
        recipe.dinov2 = build_frozen_dinov2(cfg, recipe.student)[0].to(recipe.ctx.device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        recipe.train_step()                                   # warm-up (allocations, kernels)
        sync()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            recipe.train_step()
            sync()
            times.append(time.perf_counter() - t)
    finally:
        recipe.cleanup()
    per_step = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"device": device, "step_s": per_step, "images_per_s": args.batch_size / per_step,
            "peak_mib": peak / 2 ** 20, "peak_kind": "CUDA allocated" if device.startswith("cuda") else "process RSS"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="vits")
    p.add_argument("--input-size", type=int, default=518)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--ratio", type=parse_ratio, default=(1, 2))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--devices", default=None, help="comma list (default: cpu, plus cuda when available)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        data = write_scenes(Path(tmp) / "data", 6, seed=0, height=600, width=800)
        rows = [bench(d, args, data, Path(tmp)) for d in devices]
    print(f"training throughput, {args.encoder} at {args.input_size}x{args.input_size}, batch {args.batch_size} "
          f"(labelled:pseudo {args.ratio[0]}:{args.ratio[1]}, CutMix, feature alignment), {args.steps} timed steps")
    print(f"{'device':8} {'s/step':>8} {'images/s':>9} {'peak MiB':>9}  peak of")
    for r in rows:
        print(f"{r['device']:8} {r['step_s']:8.2f} {r['images_per_s']:9.3f} {r['peak_mib']:9.0f}  {r['peak_kind']}")
    if len(rows) == 2:
        print(f"cuda / cpu speed-up: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
