"""Label-store speed at 10,000 / 100,000 / 1,000,000 images: each hot query's median and growth.

    python benchmarks/bench_store.py                            # 10k, 100k, 1M in a temp folder
    python benchmarks/bench_store.py --sizes 10000,100000 --repeat 30
    python benchmarks/bench_store.py --db /tmp/bench.db --keep  # reuse (and grow) a filled file

One database grows from size to size (bulk inserts straight into the tables: 1,000,000 images
take about a minute), and the same queries run through the public Store API at each size.
Rows are synthetic: every image has a prediction and a label revision (a 48x64 float32 label
from a pool of 64 stored arrays), 5 % have no label yet (NULL confidence), statuses 70 %
pending / 15 % accepted / 5 % rejected / 10 % corrected, random names. No audit rows.

Goal (issue 16): every hot query <= 50 ms at 1M and <= 2x its 10k median. Rows marked
"(info)" are shown for comparison and not held to it: the old GROUP BY count, a page jump by
position (an index walk of `offset` entries) and locate's position (an index range count).
Exit status 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.store import LAST_PAGE, Store  # noqa: E402
from pipeline.store.arrays import add_array_row  # noqa: E402

GOAL_MS, GOAL_GROWTH = 50.0, 2.0
STATUS_SHARE = (("pending", 0.70), ("accepted", 0.15), ("rejected", 0.05), ("corrected", 0.10))
T0 = 1_800_000_000.0                       # synthetic import times, one second apart


def label_pool(store: Store, n: int = 64) -> list[str]:
    """n small float32 labels stored as real (hash-checked) blobs; rows share them."""
    rng = np.random.default_rng(0)
    shas = []
    with store.write() as db:
        for _ in range(n):
            stored = store.blobs.put_array(rng.random((48, 64), dtype=np.float32))
            add_array_row(db, stored)
            shas.append(stored.sha256)
    return shas


def _rows(start: int, end: int, pool: list[str], rng: random.Random, rev_base: int):
    statuses = [s for s, _ in STATUS_SHARE]
    weights = [w for _, w in STATUS_SHARE]
    images, preds, revs = [], [], []
    for i in range(start, end):
        image_id = i + 1
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i)) + ".000000Z"
        labelled = rng.random() >= 0.05
        status = rng.choices(statuses, weights)[0] if labelled else "pending"
        conf = rng.random() if labelled else None
        sha = hashlib.sha256(f"image {i}".encode()).hexdigest()
        name = f"{hashlib.md5(sha.encode()).hexdigest()[:10]}.jpg"
        rev_id = rev_base + len(revs) + 1 if labelled else None
        images.append((image_id, sha, name, ".jpg", 4096, 64, 48, "bench", status, conf, rev_id, at, at))
        if labelled:
            label = pool[i % len(pool)]
            preds.append((image_id, "teacher", "disparity", label, conf, at))
            revs.append((rev_id, image_id, 1, "pseudo_label", "disparity", label, "teacher", None,
                         "model:teacher", at))
    return images, preds, revs


def fill(path: Path, start: int, end: int, pool: list[str], chunk: int = 50_000) -> None:
    """Images start..end-1 (ids start+1..end) with their prediction and revision, bulk inserted."""
    conn = sqlite3.connect(path)                          # foreign keys off: heads point forward
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")                  # 1 GB: index pages stay in memory
    rng = random.Random(start)
    for a in range(start, end, chunk):
        rev_base = conn.execute("SELECT coalesce(max(id), 0) FROM revisions").fetchone()[0]
        images, preds, revs = _rows(a, min(end, a + chunk), pool, rng, rev_base)
        with conn:
            conn.executemany("INSERT INTO images (id, sha256, name, ext, nbytes, width, height, source, status, "
                             "confidence, head_revision_id, created_at, updated_at) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", images)
            conn.executemany("INSERT INTO predictions (image_id, model_id, kind, array_sha256, confidence, "
                             "created_at) VALUES (?, ?, ?, ?, ?, ?)", preds)
            conn.executemany("INSERT INTO revisions (id, image_id, number, tool, kind, depth_sha256, model_id, "
                             "prediction_id, author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", revs)
    conn.close()


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def cases(path: Path, n: int) -> dict[str, tuple[callable, bool]]:
    """name -> (function, held to the goal)."""
    store = Store(path)
    mid = n // 2
    row = store.db.execute("SELECT id FROM images WHERE status = 'accepted' ORDER BY confidence, id "
                           "LIMIT 1 OFFSET ?", [int(n * 0.15 / 2)]).fetchone()[0]
    conf_cursor = _cursor_at(store, row, "confidence")          # pages that start mid-way
    name_row = store.db.execute("SELECT id FROM images ORDER BY name, id LIMIT 1 OFFSET ?", [mid]).fetchone()[0]
    name_cursor = _cursor_at(store, name_row, "name")
    pending_mid = store.db.execute("SELECT id FROM images WHERE status = 'pending' ORDER BY name, id LIMIT 1 "
                                   "OFFSET ?", [int(n * 0.35)]).fetchone()[0]
    labelled = [r[0] for r in store.db.execute("SELECT id FROM images WHERE status = 'accepted' AND "
                                               "head_revision_id IS NOT NULL AND id > ? LIMIT 50", [mid])]
    train_after = store.db.execute("SELECT id FROM images WHERE id > ? LIMIT 1", [mid]).fetchone()[0]
    rng = np.random.default_rng(1)
    mask = rng.random((48, 64)) > 0.5
    state = {"k": 0}

    def open_gallery():                                  # what the curate tab does on load
        s = Store(path)
        s.count_by_status()
        return s.list_images(sort="confidence", limit=50)

    def open_image():
        image_id = labelled[state["k"] % len(labelled)]
        state["k"] += 1
        rec = store.get_image(image_id)
        history = store.history(image_id)
        store.load_label(history.head)
        store.point_pairs(image_id)
        store.predictions(image_id)
        return rec

    def save_correction():
        image_id = labelled[state["k"] % len(labelled)]
        state["k"] += 1
        head = store.get_image(image_id).head_revision_id
        store.save_revision(image_id, rng.random((48, 64), dtype=np.float32), expected_head=head,
                            tool="plane", author="bench", masks={"ignore": mask}, status=None)

    def scan_counts():
        return dict(store.db.execute("SELECT status, count(*) FROM images GROUP BY status").fetchall())

    return {
        "open gallery (new Store + counts + page 1, worst first)": (open_gallery, True),
        "filter pending, worst first, page 1": (lambda: store.list_images(status="pending", limit=50), True),
        "accepted,corrected, worst first, next page from the middle":
            (lambda: store.list_images(status="accepted,corrected", after=conf_cursor, limit=50), True),
        "all by name, next page from the middle": (lambda: store.list_images(sort="name", after=name_cursor,
                                                                            limit=50), True),
        "all newest first, last page": (lambda: store.list_images(sort="date", descending=True,
                                                                  before=LAST_PAGE, limit=50), True),
        "counts by status (trigger-kept table)": (store.count_by_status, True),
        "next/previous of an image, pending by name": (lambda: store.neighbours(pending_mid, status="pending",
                                                                                sort="name"), True),
        "open an image (record, history, head label, pairs, predictions)": (open_image, True),
        "save a correction (48x64 label + mask)": (save_correction, True),
        "training data: one chunk of 1,000 labels (keyset)":
            (lambda: store.training_items(("accepted", "corrected"), after_id=train_after, limit=1000), True),
        "(info) counts by status, GROUP BY over the index": (scan_counts, False),
        "(info) jump to the middle page by position, pending": (lambda: store.list_images(
            status="pending", offset=int(n * 0.35), limit=50), False),
        "(info) locate with position, pending by name": (lambda: store.locate(pending_mid, status="pending",
                                                                             sort="name"), False),
    }


def _cursor_at(store: Store, image_id: int, sort: str) -> str:
    """The cursor of a page ending on `image_id` (what the gallery hands back)."""
    from pipeline.store.gallery import order_of
    from pipeline.store.images import image_row
    order = order_of(sort, False)
    return order.token(order.key(image_row(store.db, image_id)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated image counts, ascending")
    ap.add_argument("--db", type=Path, default=None, help="database file (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="reuse --db if it already holds images")
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="bench_store_")
    path = args.db or Path(tmp.name) / "bench.db"
    if path.exists() and not args.keep:
        raise SystemExit(f"{path} exists; pass --keep to reuse it or choose another --db")
    store = Store(path)
    pool = label_pool(store)
    results: dict[str, list[float]] = {}
    goal: dict[str, bool] = {}
    for n in sizes:
        have = sum(store.count_by_status().values())
        if have < n:
            t0 = time.perf_counter()
            fill(path, have, n, pool)
            print(f"filled images {have + 1:,}..{n:,} in {time.perf_counter() - t0:.1f} s", flush=True)
        have = sum(store.count_by_status().values())
        print(f"{have:,} images ({path.stat().st_size / 2 ** 20:.0f} MiB)", flush=True)
        for name, (fn, held) in cases(path, have).items():
            fn()                                                 # warm the page cache once
            results.setdefault(name, []).append(timed(fn, args.repeat))
            goal[name] = held
            print(f"  {name:<66} {results[name][-1]:8.2f} ms", flush=True)
    print()
    head = " | ".join(f"{n:,}" for n in sizes)
    print(f"| query (median ms) | {head} | growth {sizes[-1]:,} / {sizes[0]:,} |")
    print("|---|" + "---|" * (len(sizes) + 1))
    ok = True
    for name, ms in results.items():
        growth = ms[-1] / ms[0] if ms[0] > 0 else float("inf")
        met = ms[-1] <= GOAL_MS and growth <= GOAL_GROWTH
        ok &= met or not goal[name]
        flag = "" if met or not goal[name] else " MISSED"
        print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in ms) + f" | {growth:.2f}x{flag} |")
    print("\nall goals met" if ok else f"\nGOAL MISSED (<= {GOAL_MS:.0f} ms and <= {GOAL_GROWTH:.0f}x)")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
