"""Regenerate tests/store/data/v4.db (+ v4-files/): a store written by schema version 4 code.

It holds what a store had before labels carried provenance (migration 5): pseudo-labels by a
model, a plane correction, an ignore-only edit, a label typed in whole by a person, a restore,
a region copied from another model's prediction, and a point pair. tests/store/test_provenance.py
migrates a copy and checks what each revision's provenance becomes.

Never regenerate it with newer code: it must stay what schema-4 code wrote. To remake it, check
out a commit whose MIGRATIONS end at version 4 (e.g. 783fcc1) and run, from the repository root:
    python tests/store/data/make_v4_store.py
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
H, W = 6, 8


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def ramp(value: float) -> np.ndarray:
    return (value + 0.01 * np.arange(H * W, dtype=np.float32).reshape(H, W)).astype(np.float32)


def main() -> None:
    from pipeline.store import ANY_HEAD, Store
    from pipeline.store.schema import SCHEMA_VERSION
    assert SCHEMA_VERSION == 4, "run this with schema-4 code (see the docstring)"
    db = HERE / "v4.db"
    for p in (db, HERE / "v4.db-wal", HERE / "v4.db-shm"):
        p.unlink(missing_ok=True)
    shutil.rmtree(HERE / "v4-files", ignore_errors=True)
    store = Store(db)
    region = np.zeros((H, W), bool)
    region[1:4, 2:6] = True

    def pseudo(name: str, seed: int):
        rec, _ = store.add_image(png(seed), name, width=W, height=H, author="alice")
        store.add_prediction(rec.id, "teacher-a", "disparity", ramp(1.0), confidence=0.5)
        return rec

    a = pseudo("pseudo.png", 1)                                         # 1: model label, accepted
    store.set_status(a.id, "accepted", author="alice")
    b = pseudo("plane.png", 2)                                          # 2: plane on a region
    planed = ramp(1.0)
    planed[region] = 2.5
    store.save_revision(b.id, planed, expected_head=store.head(b.id).id, tool="plane", author="alice")
    c = pseudo("ignored.png", 3)                                        # 3: ignore mask only
    store.save_revision(c.id, None, expected_head=store.head(c.id).id, tool="ignore_mask", author="bob",
                        masks={"ignore": region})
    d = pseudo("pairs.png", 4)                                          # 4: a point pair
    store.set_status(d.id, "accepted", author="carol")
    store.add_point_pair(d.id, (5, 1), (0, 1), 1, author="carol")
    e, _ = store.add_image(png(5), "typed.png", width=W, height=H, author="dave")   # 5: typed in whole
    store.save_revision(e.id, ramp(3.0), expected_head=None, tool="import", author="dave", model_id=None,
                        kind="metric_depth")
    f = pseudo("restored.png", 6)                                       # 6: plane, then restore rev 1
    store.save_revision(f.id, planed, expected_head=store.head(f.id).id, tool="plane", author="alice")
    store.restore_revision(f.id, store.history(f.id).revisions[0].id, expected_head=ANY_HEAD, author="alice")
    g = pseudo("copied.png", 7)                                         # 7: region copied from model b
    store.add_prediction(g.id, "teacher-b", "disparity", ramp(5.0), make_label=False)
    copied = ramp(1.0)
    copied[region] = 7.0
    store.save_revision(g.id, copied, expected_head=store.head(g.id).id, tool="copy", author="alice",
                        note="copied from teacher-b")
    store.close()
    import sqlite3
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.close()
    print(f"wrote {db} and {HERE / 'v4-files'}")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(HERE.parents[2]))
    main()
