"""Plain, immutable records the store returns (no connection inside; safe to pass anywhere)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _json(text: str | None, default=None):
    return default if text in (None, "") else json.loads(text)


@dataclass(frozen=True)
class ImageRecord:
    id: int
    sha256: str
    name: str                   # original file name
    path: Path                  # the stored copy (content-addressed)
    width: int
    height: int
    nbytes: int
    source: str | None
    status: str                 # pending | accepted | rejected | corrected
    confidence: float | None    # low = review first
    head_revision_id: int | None
    created_at: str
    updated_at: str
    clip: str | None = None             # source video ('<file name>#<sha256[:12]>'); None for photos
    frame_time: float | None = None     # seconds into the clip
    frame_index: int | None = None      # 0-based frame of the clip

    @classmethod
    def from_row(cls, row: dict, path: Path) -> ImageRecord:
        return cls(row["id"], row["sha256"], row["name"], path, row["width"], row["height"],
                   row["nbytes"], row["source"], row["status"], row["confidence"],
                   row["head_revision_id"], row["created_at"], row["updated_at"],
                   row.get("clip"), row.get("frame_time"), row.get("frame_index"))


@dataclass(frozen=True)
class Page:
    """One gallery page: `items` in order, `total` matching the filter. `offset`: the position
    of the first item when the page was asked for by position (None for a cursor page).
    Cursors (None when there is no such page): pass `next_cursor` as `list_images(after=...)`,
    `prev_cursor` as `before=...`."""
    items: list[ImageRecord]
    total: int
    offset: int | None
    limit: int
    next_cursor: str | None = None
    prev_cursor: str | None = None


@dataclass(frozen=True)
class Location:
    """An image's place in a gallery order."""
    index: int | None           # 0-based position; None when the filter excludes the image
    total: int
    previous_id: int | None
    next_id: int | None


@dataclass(frozen=True)
class PredictionRecord:
    id: int
    image_id: int
    model_id: str
    kind: str                   # disparity | metric_depth
    array_sha256: str
    confidence: float | None
    job_id: int | None
    created_at: str

    @classmethod
    def from_row(cls, row: dict) -> PredictionRecord:
        return cls(row["id"], row["image_id"], row["model_id"], row["kind"], row["array_sha256"],
                   row["confidence"], row["job_id"], row["created_at"])


@dataclass(frozen=True)
class Revision:
    id: int
    image_id: int
    parent_id: int | None
    number: int                 # 1, 2, ... per image, in creation order
    tool: str                   # kind of change: 'pseudo_label', 'ignore_mask', 'plane', ...
    kind: str                   # disparity | metric_depth
    depth_sha256: str
    masks: dict[str, str]       # mask name ('ignore', 'sky') -> array sha256
    model_id: str | None
    prediction_id: int | None
    author: str
    note: str | None
    created_at: str
    # provenance (migration 5; see pipeline/store/provenance.py)
    source: str = "human"       # 'model:<id>' | 'human' | 'ground_truth:<name>'
    human_sha256: str | None = None   # bool (H, W): pixels a person set (None on older 'human' rows: derived)
    valid_sha256: str | None = None   # bool (H, W): ground-truth pixels with a measurement
    meta: dict = field(default_factory=dict)   # how the values were made (migration 8), e.g. a calibration's fit

    @classmethod
    def from_row(cls, row: dict, masks: dict[str, str]) -> Revision:
        return cls(row["id"], row["image_id"], row["parent_id"], row["number"], row["tool"],
                   row["kind"], row["depth_sha256"], dict(masks), row["model_id"],
                   row["prediction_id"], row["author"], row["note"], row["created_at"],
                   row.get("source") or "human", row.get("human_sha256"), row.get("valid_sha256"),
                   _json(row.get("meta"), {}))

    @property
    def is_ground_truth(self) -> bool:
        return self.source.startswith("ground_truth:")

    @property
    def is_model(self) -> bool:
        return self.source.startswith("model:")

    @property
    def source_name(self) -> str:
        """What follows 'model:' / 'ground_truth:' ('' for 'human')."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""


@dataclass(frozen=True)
class Label:
    """A revision with its arrays loaded (and hash-checked)."""
    revision: Revision
    depth: np.ndarray                              # (H, W) float32
    masks: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (H, W) bool/uint8


@dataclass(frozen=True)
class PointPair:
    """A DA-2K style pair: points [h, w] (row, column) everywhere (store, services, studio tables, exports);
    `pipeline.labels.corrections.check_point_pairs` reads it as it is."""
    id: int
    image_id: int
    point1: tuple[int, int]     # (h, w) = (row, column)
    point2: tuple[int, int]
    closer: int                 # 1 or 2
    author: str
    flagged: bool               # the head label disagrees with it
    revision_id: int | None
    created_at: str

    @classmethod
    def from_row(cls, row: dict) -> PointPair:
        return cls(row["id"], row["image_id"], (row["y1"], row["x1"]), (row["y2"], row["x2"]),
                   row["closer"], row["author"], bool(row["flagged"]), row["revision_id"],
                   row["created_at"])


@dataclass(frozen=True)
class TrainingItem:
    """The newest (head) label of one curated image, ready for the trainer."""
    image_id: int
    image_path: Path
    status: str
    revision_id: int
    kind: str                   # disparity | metric_depth
    model_id: str | None
    depth_sha256: str
    mask_sha256: dict[str, str]
    point_pairs: list[PointPair]
    blobs: Any = field(repr=False, compare=False, default=None)   # BlobStore
    source: str = "human"                                         # the revision's provenance
    valid_sha256: str | None = None                               # ground truth: pixels with a measurement

    def depth(self) -> np.ndarray:
        """(H, W) float32, hash-checked."""
        return self.blobs.read_array(self.depth_sha256, what=f"depth of revision {self.revision_id}")

    def masks(self) -> dict[str, np.ndarray]:
        return {n: self.blobs.read_array(s, what=f"{n} mask of revision {self.revision_id}")
                for n, s in self.mask_sha256.items()}

    def valid(self) -> np.ndarray | None:
        """Ground truth's validity mask (None: every finite value counts)."""
        if not self.valid_sha256:
            return None
        return self.blobs.read_array(self.valid_sha256, what=f"validity mask of revision {self.revision_id}").astype(bool)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    status: str                 # queued | running | cancelling | cancelled | failed | done
    argv: list[str]
    params: dict
    pid: int | None
    done: int
    total: int | None
    message: str | None
    metrics: dict
    result: dict
    error: str | None
    author: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None

    @classmethod
    def from_row(cls, row: dict) -> Job:
        return cls(row["id"], row["kind"], row["status"], _json(row["argv"], []),
                   _json(row["params"], {}), row["pid"], row["done"], row["total"], row["message"],
                   _json(row["metrics"], {}), _json(row["result"], {}), row["error"], row["author"],
                   row["created_at"], row["started_at"], row["finished_at"], row["heartbeat_at"])

    @property
    def finished(self) -> bool:
        return self.status in ("cancelled", "failed", "done")


@dataclass(frozen=True)
class Checkpoint:
    id: int
    path: str
    model_id: str
    config: dict
    metrics: dict
    job_id: int | None
    note: str | None
    created_at: str

    @classmethod
    def from_row(cls, row: dict) -> Checkpoint:
        return cls(row["id"], row["path"], row["model_id"], _json(row["config"], {}),
                   _json(row["metrics"], {}), row["job_id"], row["note"], row["created_at"])


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: int | None
    detail: dict

    @classmethod
    def from_row(cls, row: dict) -> AuditEntry:
        return cls(row["id"], row["at"], row["actor"], row["action"], row["entity"],
                   row["entity_id"], _json(row["detail"], {}))
