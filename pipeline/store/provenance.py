"""Where a label's values came from, so that nothing is ever scored against the model that made it.

Every revision has a `source` (migration 5):
- 'model:<id>'           a model's prediction (a pseudo-label, `add_prediction`);
- 'human'                a person's change; `human_sha256` marks the pixels a person set, per pixel:
                         a plane fitted to a painted region makes those pixels human, an ignore mask
                         changes no value, a region copied from a model's prediction is a model's
                         values again (VALUE_ORIGIN below);
- 'ground_truth:<name>'  imported measurements (stereo, LiDAR, a sensor): `kind` says depth in metres
                         ('metric_depth') or disparity, `valid_sha256` which pixels hold a value.

Ground-truth revisions sit beside the label chain: a separate root (no parent) that never becomes
the image's head, so importing ground truth never replaces the pseudo-label training reads
(pipeline/train/store_source.py uses it only when a run asks for it: `train_on_ground_truth`).
Point pairs are always a person's (the studio and the DA-2K import are their only writers).

Functions of the connection (`db`) and the blob store (`blobs`). Independent evidence of an image (`evidence`): its newest ground truth, the human pixels of its
head label, and its point pairs. Revisions written before migration 5 record no human mask: for
those, `human_pixels` derives it on read by walking the chain with the same per-tool rules
(pixels whose value changed from the parent; a first label typed in by a person is human when it
did not start from a model; a restore takes the restored revision's pixels).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from . import audit
from .arrays import add_array_row, check_depth, check_mask
from .blobs import BlobStore
from .db import utc_now, write
from .errors import InvalidValueError, NotFoundError
from .images import image_row, image_shape
from .points import point_pairs
from .records import PointPair, Revision
from .revisions import get_revision
from .schema import DEPTH_KINDS, GROUND_TRUTH_TOOL

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$")
# How a person's tool changes the per-pixel origin of the values it touched:
#   "human": a person set them (default for tools not listed: plane, sky, import, ...)
#   "model": they are a model's values again (copy from a prediction)
#   "keep":  a blend of the parent's values keeps their origin (smoothing), or nothing changed;
#            calibration to metres too: a person chose one scale and shift, the shape is still the
#            model's, so a calibrated pseudo-label is never evidence against the model that made it
VALUE_ORIGIN = {"copy": "model", "smooth": "keep", "ignore_mask": "keep", "unignore": "keep",
                "pseudo_label": "model", "calibrate": "keep"}
_RESTORED = re.compile(r"restored revision (\d+)")


def check_source(source: str) -> str:
    """'human', 'model:<id>' or 'ground_truth:<name>'; InvalidValueError otherwise."""
    if source == "human":
        return source
    kind, _, name = str(source).partition(":")
    if kind not in ("model", "ground_truth") or not name:
        raise InvalidValueError(f"label source must be 'human', 'model:<id>' or 'ground_truth:<name>'; got {source!r}")
    return source


def changed_pixels(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """bool (H, W): where the value differs (two NaNs, or two equal infinities, are unchanged)."""
    new, old = np.asarray(new), np.asarray(old)
    return ~((new == old) | (np.isnan(new) & np.isnan(old)))


def next_human(tool: str, parent_human: np.ndarray | None, changed: np.ndarray) -> np.ndarray:
    """The human pixels after `tool` changed the `changed` pixels of a parent with `parent_human`."""
    before = np.zeros(changed.shape, bool) if parent_human is None else np.asarray(parent_human, bool)
    origin = VALUE_ORIGIN.get(tool, "human")
    if origin == "human":
        return before | changed
    if origin == "model":
        return before & ~changed
    return before.copy()


@dataclass(frozen=True)
class Evidence:
    """What an image holds that no model produced."""

    image_id: int
    ground_truth: Revision | None = None       # newest ground-truth revision
    human: Revision | None = None              # the head, when a person set some of its pixels
    pairs: list[PointPair] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.ground_truth is None and self.human is None and not self.pairs

    def describe(self) -> str:
        parts = []
        if self.ground_truth is not None:
            parts.append(f"ground truth ({self.ground_truth.source_name}, {self.ground_truth.kind})")
        if self.human is not None:
            parts.append(f"human-corrected pixels of revision {self.human.number}")
        if self.pairs:
            parts.append(f"{len(self.pairs)} point pair(s)")
        return " + ".join(parts) if parts else "nothing independent"

# ------------------------------------------------------------------ ground truth
def add_ground_truth(db, blobs: BlobStore, image_id: int, values: np.ndarray, *, kind: str, source: str,
                     author: str, valid: np.ndarray | None = None, note: str | None = None) -> tuple[Revision, bool]:
    """Store measured depth ('metric_depth', metres) or disparity for an image, beside its labels.

    values: (H, W) float32; valid: bool (H, W) (default: finite and > 0). The revision is a
    separate root: the head (the training label) does not move. Importing the same values
    from the same source again returns the existing revision (created=False).
    """
    if kind not in DEPTH_KINDS:
        raise InvalidValueError(f"ground truth kind must be one of {DEPTH_KINDS} (metres or disparity); got {kind!r}")
    if not SOURCE_NAME.match(str(source)):
        raise InvalidValueError(f"ground-truth source {source!r}: use letters, digits and . _ - : / @ + "
                                "(e.g. 'middlebury2014' or 'lidar-2024')")
    shape = image_shape(db, image_id)
    arr = check_depth(values, shape, f"ground truth of image {image_id}")
    if valid is None:
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(arr) & (arr > 0)
    valid = check_mask(valid, "valid", shape, ("valid",)).astype(bool)
    if not valid.any():
        raise InvalidValueError(f"the ground truth of image {image_id} has no valid pixel; nothing to store")
    full = f"ground_truth:{source}"
    stored, stored_valid = blobs.put_array(arr), blobs.put_array(valid)
    with write(db):
        row = image_row(db, image_id)
        same = db.execute("SELECT id FROM revisions WHERE image_id = ? AND source = ? AND depth_sha256 = ? "
                          "AND valid_sha256 = ?", [row["id"], full, stored.sha256, stored_valid.sha256]).fetchone()
        if same is not None:
            return get_revision(db, same[0]), False
        depth_sha, valid_sha = add_array_row(db, stored), add_array_row(db, stored_valid)
        number = db.execute("SELECT coalesce(max(number), 0) + 1 FROM revisions WHERE image_id = ?",
                            [row["id"]]).fetchone()[0]
        cur = db.conn.execute(
            "INSERT INTO revisions (image_id, parent_id, number, tool, kind, depth_sha256, model_id, prediction_id, "
            "author, note, created_at, source, human_sha256, valid_sha256) "
            "VALUES (?, NULL, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, NULL, ?)",
            (row["id"], number, GROUND_TRUTH_TOOL, kind, depth_sha, author, note, utc_now(), full, valid_sha))
        audit.record(db, author, "ground_truth.add", "image", row["id"],
                     {"revision_id": cur.lastrowid, "source": full, "kind": kind})
    return get_revision(db, cur.lastrowid), True


def ground_truth(db, image_id: int) -> Revision | None:
    """The image's newest ground-truth revision (None when it has none)."""
    r = db.execute("SELECT id FROM revisions WHERE image_id = ? AND source LIKE 'ground_truth:%' "
                   "ORDER BY id DESC LIMIT 1", [int(image_id)]).fetchone()
    return get_revision(db, r[0]) if r else None


def require_ground_truth(db, image_id: int) -> Revision:
    gt = ground_truth(db, image_id)
    if gt is None:
        raise NotFoundError(f"image {image_id} has no ground truth; import it with `python -m pipeline "
                            "import-ground-truth`")
    return gt


def valid_pixels(blobs: BlobStore, revision: Revision) -> np.ndarray | None:
    """A ground-truth revision's validity mask (None: every finite value is valid)."""
    if not revision.valid_sha256:
        return None
    return blobs.read_array(revision.valid_sha256, what=f"validity mask of revision {revision.id}").astype(bool)

# ------------------------------------------------------------------ human pixels
def human_pixels(db, blobs: BlobStore, revision: Revision) -> np.ndarray | None:
    """bool (H, W) of the pixels whose value a person set; None when none did (model / ground truth)."""
    if revision.source != "human":
        return None
    if revision.human_sha256:
        return blobs.read_array(revision.human_sha256, what=f"human mask of revision {revision.id}").astype(bool)
    return _derived_chain(db, blobs, revision)


def _derived_chain(db, blobs: BlobStore, revision: Revision) -> np.ndarray:
    """Human pixels of a revision written before migration 5 (no mask recorded): walk up to the
    first revision whose pixels are known, then apply each step's tool rule on the way down."""
    chain, rev = [], revision
    while rev.source == "human" and not rev.human_sha256 and rev.tool != "restore" and rev.parent_id is not None:
        chain.append(rev)
        rev = get_revision(db, rev.parent_id)
    shape = image_shape(db, revision.image_id)
    if rev.source != "human":
        human = np.zeros(shape, bool)
    elif rev.human_sha256:
        human = human_pixels(db, blobs, rev)
    elif rev.tool == "restore":
        human = _restored_human(db, blobs, rev, shape)
    else:                               # a first label by a person: theirs unless it started from a model
        human = np.full(shape, rev.model_id is None)
    for step in reversed(chain):
        parent = get_revision(db, step.parent_id)
        changed = changed_pixels(_depth(blobs, step), _depth(blobs, parent))
        human = next_human(step.tool, human, changed)
    return human


def _restored_human(db, blobs: BlobStore, rev: Revision, shape) -> np.ndarray:
    m = _RESTORED.search(rev.note or "")
    if m:
        row = db.execute("SELECT id FROM revisions WHERE image_id = ? AND number = ?",
                         [rev.image_id, int(m.group(1))]).fetchone()
        if row is not None:
            found = human_pixels(db, blobs, get_revision(db, row[0]))
            return np.zeros(shape, bool) if found is None else found
    return np.zeros(shape, bool)                 # unknown: claim nothing


def _depth(blobs: BlobStore, rev: Revision) -> np.ndarray:
    return blobs.read_array(rev.depth_sha256, what=f"depth of label revision {rev.id}")


def derived_human(db, blobs: BlobStore, row: dict, depth: np.ndarray | None, tool: str):
    """Inside a save: the new revision's human pixels from the head it replaces (stored array)."""
    shape = (row["height"], row["width"])
    if row["head_revision_id"] is None:
        human = np.ones(shape, bool)                       # a first label, typed in by a person
    else:
        parent = get_revision(db, row["head_revision_id"])
        before = human_pixels(db, blobs, parent) if parent.source == "human" else None
        changed = np.zeros(shape, bool) if depth is None else changed_pixels(depth, _depth(blobs, parent))
        human = next_human(tool, before, changed)
    return blobs.put_array(human)

# ------------------------------------------------------------------ evidence
def evidence(db, blobs: BlobStore, image_id: int) -> Evidence:
    """The image's independent labels: ground truth, the head's human pixels, point pairs."""
    image_id = int(image_id)
    gt = ground_truth(db, image_id)
    head_id = image_row(db, image_id)["head_revision_id"]
    human = None
    if head_id is not None:
        head = get_revision(db, head_id)
        mask = human_pixels(db, blobs, head)
        if mask is not None and mask.any():
            human = head
    return Evidence(image_id, gt, human, point_pairs(db, image_id))


def evidence_image_ids(db) -> list[int]:
    """Images that may hold independent evidence (ground truth, a head a person edited, point
    pairs), in id order. A candidate whose head has no human pixel turns out empty in `evidence`."""
    rows = db.execute(
        "SELECT id FROM images i WHERE EXISTS (SELECT 1 FROM revisions r WHERE r.image_id = i.id AND "
        "r.source LIKE 'ground_truth:%') OR EXISTS (SELECT 1 FROM revisions h WHERE h.id = i.head_revision_id "
        "AND h.source = 'human') OR EXISTS (SELECT 1 FROM point_pairs p WHERE p.image_id = i.id AND "
        "p.deleted_at IS NULL) ORDER BY id").fetchall()
    return [r[0] for r in rows]
