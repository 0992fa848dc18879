"""The label store: images, predictions, label revisions, masks, point pairs, jobs,
checkpoints and an audit log in one SQLite file (+ content-addressed files beside it).

    from pipeline.store import Store, ANY_HEAD, StaleRevisionError
    store = Store("data/studio.db")
`Store` is a facade over table modules of plain functions taking the connection (store.py lists them).
See docs/STORE.md for the API and the rules (append-only revisions, optimistic concurrency).
"""
from .blobs import BlobStore, StoredArray
from .errors import (
    CorruptRecordError,
    HistoryError,
    InvalidValueError,
    JobStateError,
    NotFoundError,
    SchemaVersionError,
    StaleRevisionError,
    StoreError,
)
from .gallery import LAST_PAGE, SORTS, GalleryFilter, Histogram
from .holdout import in_holdout
from .images import ANY_HEAD
from .provenance import Evidence, check_source
from .records import (
    AuditEntry,
    Checkpoint,
    ImageRecord,
    Job,
    Label,
    Location,
    Page,
    PointPair,
    PredictionRecord,
    Revision,
    TrainingItem,
)
from .review import StatusChanges
from .revisions import History
from .schema import CONFIDENCE_BINS, DEPTH_KINDS, JOB_STATUSES, MASK_NAMES, SCHEMA_VERSION, STATUSES
from .store import Store, files_dir_for
from .tags import check_tag, check_tags

__all__ = [
    "Store", "ANY_HEAD", "SORTS", "LAST_PAGE", "files_dir_for", "BlobStore", "StoredArray",
    "StoreError", "NotFoundError", "StaleRevisionError", "CorruptRecordError", "HistoryError",
    "SchemaVersionError", "InvalidValueError", "JobStateError",
    "ImageRecord", "Page", "Location", "PredictionRecord", "Revision", "Label", "History", "PointPair",
    "TrainingItem", "Job", "Checkpoint", "AuditEntry", "Evidence", "check_source",
    "GalleryFilter", "Histogram", "StatusChanges", "check_tag", "check_tags", "in_holdout",
    "STATUSES", "JOB_STATUSES", "MASK_NAMES", "DEPTH_KINDS", "SCHEMA_VERSION", "CONFIDENCE_BINS",
]
