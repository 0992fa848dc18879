"""The one owner of the label store's schema: an ordered list of migrations.

The database's `PRAGMA user_version` is the number of migrations applied. Opening a store
applies the missing ones in order, each inside one `BEGIN IMMEDIATE` transaction (so two
processes opening the same new file cannot both migrate it). A migration, once committed to
main, is never edited: change the schema by appending a new one. `tests/store/data/v1.db`
is a database made by migration 1 alone; the tests check that migrating it keeps its rows.

Conventions: timestamps are ISO-8601 UTC text with microseconds ("2026-11-23T22:52:46.123456Z",
sortable); JSON columns hold text; booleans are 0/1 integers; arrays and image bytes live in
files named by their sha256 (see blobs.py) and rows refer to them by that hash.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .errors import SchemaVersionError

STATUSES = ("pending", "accepted", "rejected", "corrected")
JOB_STATUSES = ("queued", "running", "cancelling", "cancelled", "failed", "done")
MASK_NAMES = ("ignore", "sky")
DEPTH_KINDS = ("disparity", "metric_depth")
GROUND_TRUTH_TOOL = "ground_truth"   # the tool of an imported ground-truth revision (a separate root)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


@dataclass(frozen=True)
class Migration:
    version: int          # user_version after it runs
    title: str
    statements: tuple[str, ...]


# --------------------------------------------------------------------------- migration 1
_V1 = (
    """CREATE TABLE arrays (
        sha256 TEXT PRIMARY KEY,
        dtype TEXT NOT NULL,
        shape TEXT NOT NULL,            -- JSON list, e.g. [480, 640]
        nbytes INTEGER NOT NULL,        -- size of the .npy file
        created_at TEXT NOT NULL
    )""",
    f"""CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,    -- of the original file bytes
        name TEXT NOT NULL,             -- original file name (display only)
        ext TEXT NOT NULL,              -- '.jpg', '.png', ... of the stored copy
        nbytes INTEGER NOT NULL,
        width INTEGER NOT NULL,         -- after EXIF orientation
        height INTEGER NOT NULL,
        source TEXT,                    -- 'upload', 'zip:<name>', 'folder:<path>', 'cli', ...
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(STATUSES)}),
        confidence REAL,                -- low = review first; NULL = not pseudo-labelled yet
        head_revision_id INTEGER REFERENCES revisions(id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    f"""CREATE TABLE predictions (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN {_in(DEPTH_KINDS)}),
        array_sha256 TEXT NOT NULL REFERENCES arrays(sha256),
        confidence REAL,
        job_id INTEGER,
        created_at TEXT NOT NULL,
        UNIQUE (image_id, model_id)
    )""",
    f"""CREATE TABLE revisions (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES revisions(id),
        number INTEGER NOT NULL,        -- 1, 2, 3 ... per image, in creation order
        tool TEXT NOT NULL,             -- kind of change: 'pseudo_label', 'ignore_mask', 'plane', ...
        kind TEXT NOT NULL CHECK (kind IN {_in(DEPTH_KINDS)}),
        depth_sha256 TEXT NOT NULL REFERENCES arrays(sha256),
        model_id TEXT,                  -- provenance: the model whose prediction it started from
        prediction_id INTEGER REFERENCES predictions(id),
        author TEXT NOT NULL,
        note TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (image_id, number)
    )""",
    f"""CREATE TABLE masks (
        revision_id INTEGER NOT NULL REFERENCES revisions(id) ON DELETE CASCADE,
        name TEXT NOT NULL CHECK (name IN {_in(MASK_NAMES)}),
        array_sha256 TEXT NOT NULL REFERENCES arrays(sha256),
        PRIMARY KEY (revision_id, name)
    )""",
    """CREATE TABLE point_pairs (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        y1 INTEGER NOT NULL, x1 INTEGER NOT NULL,   -- point 1 [h, w]
        y2 INTEGER NOT NULL, x2 INTEGER NOT NULL,   -- point 2 [h, w]
        closer INTEGER NOT NULL CHECK (closer IN (1, 2)),
        author TEXT NOT NULL,
        flagged INTEGER NOT NULL DEFAULT 0,         -- 1: the head label disagrees
        revision_id INTEGER REFERENCES revisions(id),  -- head when it was added
        created_at TEXT NOT NULL,
        deleted_at TEXT                              -- soft delete: nothing is lost
    )""",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,           -- 'image.add', 'revision.save', 'head.undo', ...
        entity TEXT NOT NULL,           -- 'image', 'revision', 'job', 'checkpoint', ...
        entity_id INTEGER,
        detail TEXT                     -- JSON
    )""",
    "CREATE INDEX idx_predictions_image ON predictions (image_id)",
    "CREATE INDEX idx_revisions_image ON revisions (image_id, number)",
    "CREATE INDEX idx_revisions_parent ON revisions (parent_id)",
    "CREATE INDEX idx_point_pairs_image ON point_pairs (image_id)",
)

# --------------------------------------------------------------------------- migration 2
_V2 = (
    f"""CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,             -- 'pseudo_label', 'train', 'evaluate', ...
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN {_in(JOB_STATUSES)}),
        argv TEXT NOT NULL,             -- JSON list: the command line that runs it
        params TEXT,                    -- JSON: anything the runner wants to keep
        pid INTEGER,
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER,
        message TEXT,                   -- latest one-line progress text
        metrics TEXT,                   -- JSON: latest metric values
        result TEXT,                    -- JSON: what it produced
        error TEXT,
        author TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        heartbeat_at TEXT
    )""",
    """CREATE TABLE job_metrics (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        at TEXT NOT NULL
    )""",
    """CREATE TABLE job_logs (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        line TEXT NOT NULL
    )""",
    """CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        model_id TEXT NOT NULL,
        config TEXT NOT NULL,           -- JSON (ModelConfig fields)
        metrics TEXT,                   -- JSON: evaluation results
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        note TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_jobs_status ON jobs (status, id)",
    "CREATE INDEX idx_jobs_kind ON jobs (kind, id)",
    "CREATE INDEX idx_job_metrics ON job_metrics (job_id, name, step)",
    "CREATE INDEX idx_job_logs ON job_logs (job_id, id)",
    "CREATE INDEX idx_checkpoints_model ON checkpoints (model_id)",
)

# --------------------------------------------------------------------------- migration 3
# The gallery: filter by status, sort by confidence / name / date, page (10,000+ images).
_V3 = (
    "CREATE INDEX idx_images_status_conf ON images (status, confidence, id)",
    "CREATE INDEX idx_images_status_name ON images (status, name, id)",
    "CREATE INDEX idx_images_status_created ON images (status, created_at, id)",
    "CREATE INDEX idx_images_conf ON images (confidence, id)",
    "CREATE INDEX idx_images_name ON images (name, id)",
    "CREATE INDEX idx_images_created ON images (created_at, id)",
    "CREATE INDEX idx_audit_entity ON audit (entity, entity_id)",
)

# --------------------------------------------------------------------------- migration 4
# Filter by status in import (id) order without a temporary sort: an index on (status) holds
# (status, rowid), i.e. id order within each status.
_V4 = (
    "CREATE INDEX idx_images_status ON images (status)",
)

# --------------------------------------------------------------------------- migration 5
# Frames imported from a video: which clip (its file name and the start of its sha256, so two clips
# with one name stay apart) and where in it. NULL for photos. The gallery filters by clip in time order.
_V5_CLIPS = (
    "ALTER TABLE images ADD COLUMN clip TEXT",             # '<file name>#<sha256 of the video, 12 hex>'
    "ALTER TABLE images ADD COLUMN frame_time REAL",       # seconds from the start of the clip
    "ALTER TABLE images ADD COLUMN frame_index INTEGER",   # the frame's position in the clip (0-based)
    "CREATE INDEX idx_images_clip ON images (clip, frame_time, id)",
)

# --------------------------------------------------------------------------- migration 6
# Label provenance (issue 9): where each revision's values came from, so that nothing is ever
# scored against the model that made it.
#   source        'model:<id>'  a model's prediction (pseudo-label)
#                 'human'       a person's correction; human_sha256 says which pixels they set
#                 'ground_truth:<name>'  imported sensor / stereo / LiDAR values (kind says depth in
#                 metres or disparity); valid_sha256 is the validity mask
#   human_sha256  bool (H, W): the pixels whose value a person set (cumulative along the chain).
#                 NULL on a 'human' revision written before this migration: derived on read by
#                 comparing it with its parent (pipeline/store/provenance.py, same rules).
#   valid_sha256  bool (H, W): ground-truth pixels that hold a measurement.
# Existing revisions: 'model:<id>' when their author is 'model:<id>' (what add_prediction wrote),
# else 'human'. Ground-truth revisions are separate roots (parent NULL) that never become the head.
_V6_PROVENANCE = (
    "ALTER TABLE revisions ADD COLUMN source TEXT CHECK (source = 'human' OR source LIKE 'model:_%' "
    "OR source LIKE 'ground_truth:_%')",
    "ALTER TABLE revisions ADD COLUMN human_sha256 TEXT REFERENCES arrays(sha256)",
    "ALTER TABLE revisions ADD COLUMN valid_sha256 TEXT REFERENCES arrays(sha256)",
    "UPDATE revisions SET source = CASE WHEN author LIKE 'model:_%' THEN author ELSE 'human' END",
    "CREATE INDEX idx_revisions_source ON revisions (image_id, source)",
)

# --------------------------------------------------------------------------- migration 7
# A store that holds millions: counts per status kept by triggers in the same transaction as
# the change, so the gallery's counts and page totals read four rows instead of scanning an
# index of every image (benchmarks/bench_store.py measures both).
_V7_COUNTS = (
    """CREATE TABLE image_counts (
        status TEXT PRIMARY KEY,
        n INTEGER NOT NULL              -- images with this status; kept by the triggers below
    ) WITHOUT ROWID""",
    *(f"INSERT INTO image_counts (status, n) VALUES ('{s}', (SELECT count(*) FROM images WHERE status = '{s}'))"
      for s in STATUSES),
    """CREATE TRIGGER trg_image_counts_insert AFTER INSERT ON images BEGIN
        UPDATE image_counts SET n = n + 1 WHERE status = NEW.status;
    END""",
    """CREATE TRIGGER trg_image_counts_delete AFTER DELETE ON images BEGIN
        UPDATE image_counts SET n = n - 1 WHERE status = OLD.status;
    END""",
    """CREATE TRIGGER trg_image_counts_status AFTER UPDATE OF status ON images
    WHEN NEW.status IS NOT OLD.status BEGIN
        UPDATE image_counts SET n = n - 1 WHERE status = OLD.status;
        UPDATE image_counts SET n = n + 1 WHERE status = NEW.status;
    END""",
)

# --------------------------------------------------------------------------- migration 8
# Curation at scale and calibrated labels (issues 13, 14):
#   image_tags        free-form tags on images (the gallery's and the CLI's tag filter); a row per
#                     (tag, image), read by tag (primary key) or by image (index)
#   confidence_bins   the confidence histogram per status, CONFIDENCE_BINS bins over [0, 1] (values
#                     outside are counted in the end bins), kept by triggers like image_counts, so the
#                     gallery's histogram reads 80 rows instead of scanning every image
#   revisions.meta    JSON: how a revision's values were made (a calibration's references and fit)
CONFIDENCE_BINS = 20
_BIN = "min({n} - 1, max(0, CAST({c} * {n} AS INTEGER)))"


def _bin(ref: str) -> str:
    return _BIN.format(n=CONFIDENCE_BINS, c=f"{ref}.confidence")


_V8_CURATION = (
    """CREATE TABLE image_tags (
        tag TEXT NOT NULL,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        PRIMARY KEY (tag, image_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX idx_image_tags_image ON image_tags (image_id, tag)",
    """CREATE TABLE confidence_bins (
        status TEXT NOT NULL,
        bin INTEGER NOT NULL,           -- 0 .. CONFIDENCE_BINS - 1: confidence in [bin, bin + 1) / CONFIDENCE_BINS
        n INTEGER NOT NULL,             -- images with this status and a confidence in the bin; kept by triggers
        PRIMARY KEY (status, bin)
    ) WITHOUT ROWID""",
    *(f"INSERT INTO confidence_bins (status, bin, n) VALUES ('{s}', {b}, 0)"
      for s in STATUSES for b in range(CONFIDENCE_BINS)),
    f"""UPDATE confidence_bins SET n = (SELECT count(*) FROM images i WHERE i.status = confidence_bins.status
        AND i.confidence IS NOT NULL AND {_bin('i')} = confidence_bins.bin)""",
    f"""CREATE TRIGGER trg_confidence_bins_insert AFTER INSERT ON images WHEN NEW.confidence IS NOT NULL BEGIN
        UPDATE confidence_bins SET n = n + 1 WHERE status = NEW.status AND bin = {_bin('NEW')};
    END""",
    f"""CREATE TRIGGER trg_confidence_bins_delete AFTER DELETE ON images WHEN OLD.confidence IS NOT NULL BEGIN
        UPDATE confidence_bins SET n = n - 1 WHERE status = OLD.status AND bin = {_bin('OLD')};
    END""",
    f"""CREATE TRIGGER trg_confidence_bins_update AFTER UPDATE OF status, confidence ON images
    WHEN NEW.status IS NOT OLD.status OR NEW.confidence IS NOT OLD.confidence BEGIN
        UPDATE confidence_bins SET n = n - 1 WHERE OLD.confidence IS NOT NULL AND status = OLD.status
            AND bin = {_bin('OLD')};
        UPDATE confidence_bins SET n = n + 1 WHERE NEW.confidence IS NOT NULL AND status = NEW.status
            AND bin = {_bin('NEW')};
    END""",
    "ALTER TABLE revisions ADD COLUMN meta TEXT",
)

# --------------------------------------------------------------------------- migration 9
# One record of a trained checkpoint (pipeline/train/registration.py): metrics {"step", "last_loss",
# "images", "data_sha256"}. Rows written by the two earlier writers said "steps" (the recipe) or
# "loss" (the studio); they get the one schema's names, so a reader needs no fallbacks.
_V9_RUN_RECORDS = (
    "UPDATE checkpoints SET metrics = json_set(json_remove(metrics, '$.steps'), '$.step', "
    "json_extract(metrics, '$.steps')) WHERE json_valid(metrics) AND json_type(metrics, '$.steps') IS NOT NULL "
    "AND json_type(metrics, '$.step') IS NULL",
    "UPDATE checkpoints SET metrics = json_set(json_remove(metrics, '$.loss'), '$.last_loss', "
    "json_extract(metrics, '$.loss')) WHERE json_valid(metrics) AND json_type(metrics, '$.loss') IS NOT NULL "
    "AND json_type(metrics, '$.last_loss') IS NULL",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "images, arrays, predictions, revisions, masks, point pairs, audit", _V1),
    Migration(2, "jobs, job metrics and logs, checkpoints", _V2),
    Migration(3, "gallery indexes", _V3),
    Migration(4, "status index for the gallery's id order", _V4),
    Migration(5, "video frames: source clip, frame time and index", _V5_CLIPS),
    Migration(6, "label provenance: source, human pixels, ground-truth validity", _V6_PROVENANCE),
    Migration(7, "image counts per status, kept by triggers", _V7_COUNTS),
    Migration(8, "image tags, confidence histogram kept by triggers, revision meta", _V8_CURATION),
    Migration(9, "trained checkpoints: one metrics schema (step, last_loss)", _V9_RUN_RECORDS),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION, name: str = "database") -> int:
    """Apply the migrations missing from `conn` up to `target`; return the version reached.

    Raises SchemaVersionError when the file is newer than this code knows.
    """
    if user_version(conn) == target:
        return target
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = user_version(conn)        # re-read under the write lock
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{name} has schema version {current}, but this code only knows versions up to "
                f"{SCHEMA_VERSION}; update Depth Anything Studio or open another database")
        for m in MIGRATIONS:
            if current < m.version <= target:
                for sql in m.statements:
                    conn.execute(sql)
                current = m.version
        conn.execute(f"PRAGMA user_version = {int(current)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return current
