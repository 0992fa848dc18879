"""Label-store speed with 10,000 images: the gallery (page, filter, sort, counts) and saving a correction.

    python benchmarks/bench_store.py                  # 10,000 images in a temp folder
    python benchmarks/bench_store.py --images 2000 --db /tmp/bench.db --keep

Targets (issue 4): opening a gallery page and filtering < 300 ms; saving a correction < 100 ms.
Each figure is the median (and max) of repeated calls, through the public Store API, with a
fresh Store object per "open" so connection setup is included. The correction saves a
1024x768 float32 label plus an ignore mask (what a brush stroke produces). Exit status 1 when
a target is missed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.store import STATUSES, Store  # noqa: E402

GALLERY_TARGET_MS = 300.0
SAVE_TARGET_MS = 100.0


def fill(store: Store, n: int, batch: int = 500) -> None:
    """n images with a small pseudo-label each; random confidence; a quarter of each status."""
    rng = np.random.default_rng(0)
    small = rng.random((48, 64), dtype=np.float32)
    for start in range(0, n, batch):
        with store.write():                       # one transaction per batch (savepoints inside)
            for i in range(start, min(n, start + batch)):
                rec, _ = store.add_image(f"image {i}".encode() * 8, f"img_{i:05d}.jpg", width=64, height=48)
                store.add_prediction(rec.id, "teacher", "disparity", small + i, confidence=float(rng.random()))
                status = STATUSES[i % 4]
                if status != "pending":
                    store.set_status(rec.id, status, author="bench")


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def gallery_cases(path: Path) -> dict[str, callable]:
    def open_page():          # a new Store (connection) + counts + first page: what the tab does
        s = Store(path)
        s.count_by_status()
        return s.list_images(sort="confidence", limit=50)

    store = Store(path)
    return {
        "open gallery (new Store + counts + page 1)": open_page,
        "filter pending, worst first, page 1": lambda: store.list_images(status="pending", limit=50),
        "filter accepted,corrected by name, page 40": lambda: store.list_images(status="accepted,corrected",
                                                                               sort="name", offset=2000, limit=50),
        "all by date, newest first, last page": lambda: store.list_images(sort="date", descending=True,
                                                                          offset=9950, limit=50),
        "counts by status": store.count_by_status,
        "locate an image (next/previous), pending by name": lambda: store.locate(5001, status="pending",
                                                                                sort="name"),
    }


def save_case(store: Store) -> tuple[callable, callable]:
    """(save one correction, undo it) on a 1024x768 image."""
    rec, _ = store.add_image(b"big image" * 100, "big.jpg", width=1024, height=768)
    rng = np.random.default_rng(1)
    store.add_prediction(rec.id, "teacher", "disparity", rng.random((768, 1024), dtype=np.float32))
    mask = rng.random((768, 1024)) > 0.5
    state = {"k": 0}

    def save():
        state["k"] += 1
        label = rng.random((768, 1024), dtype=np.float32)
        head = store.get_image(rec.id).head_revision_id
        store.save_revision(rec.id, label, expected_head=head, tool="plane", author="bench",
                            masks={"ignore": mask})

    return save, lambda: store.load_label(store.get_image(rec.id).head_revision_id)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--db", type=Path, default=None, help="database file (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="reuse --db if it is already filled")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="bench_store_")
    path = args.db or Path(tmp.name) / "bench.db"
    store = Store(path)
    have = sum(store.count_by_status().values())
    if have < args.images:
        t0 = time.perf_counter()
        fill(store, args.images - have)
        print(f"filled {args.images - have:,} images (+ a pseudo-label each) in {time.perf_counter() - t0:.1f} s")
    print(f"store: {path} with {sum(store.count_by_status().values()):,} images")
    ok = True
    for name, fn in gallery_cases(path).items():
        med, mx = timed(fn, args.repeat)
        ok &= med < GALLERY_TARGET_MS
        print(f"  {name:<50} median {med:7.1f} ms  max {mx:7.1f} ms  (target < {GALLERY_TARGET_MS:.0f})")
    save, load = save_case(store)
    med, mx = timed(save, args.repeat)
    ok &= med < SAVE_TARGET_MS
    print(f"  {'save a correction (1024x768 float32 + mask)':<50} median {med:7.1f} ms  max {mx:7.1f} ms  "
          f"(target < {SAVE_TARGET_MS:.0f})")
    med, mx = timed(load, args.repeat)
    print(f"  {'load the head label (hash-checked)':<50} median {med:7.1f} ms  max {mx:7.1f} ms")
    print("all targets met" if ok else "TARGET MISSED")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
