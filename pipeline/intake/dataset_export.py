"""Exporting the curated set to a folder (and the Hub), and importing such a folder back.

Layout of an export (KEY = "<safe original stem>-<first 10 hex of the image sha256>"):
    images/KEY.<ext>          the original image bytes
    labels/KEY.npy            the head label, float32 (H, W), exact (what import reads)
    labels/KEY.png            the same as a 16-bit PNG with scale/offset (pipeline.files.depth_png)
    masks/KEY.<name>.png      each mask ('ignore', 'sky') as 8-bit PNG (bool -> 0/255), exact
    provenance/KEY.human.png  the pixels of the label a person set (label source 'human'), 0/255
    ground_truth/KEY.npy      the newest imported ground truth, float32, exact (+ KEY.valid.png)
    point_pairs.json          {KEY: [{"point1": [h, w], "point2": [h, w], "closer_point": "point1"|"point2", ...}]}
    manifest.jsonl            one JSON object per image: status, label files, provenance
    README.md                 a dataset card
`import_dataset(folder, store)` reads it back: the same image bytes, depth arrays, masks,
point pairs, statuses, label provenance (source, human pixels) and ground truth, bit for bit.
It is idempotent (importing twice adds nothing). Exports written before provenance existed
(format_version 1) are read conservatively: a label by `model:<id>` stays a model label, and a
person's edit of a model label claims no human pixel (which ones a person set was not exported).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from huggingface_hub import HfApi
from PIL import Image

from ..atomic import atomic_path, atomic_write
from ..errors import StudioError
from ..files.depth_png import write_depth_png
from ..files.image_io import decode_image
from ..store import ImageRecord, Store
from ..store.blobs import encode_array, sha256_bytes
from ..store.images import check_statuses

FORMAT = "depth-anything-studio-export"
FORMAT_VERSION = 2        # 2: label provenance (source, human pixels) and ground truth
DEFAULT_STATUSES = ("accepted", "corrected")
SUBFOLDERS = ("images", "labels", "masks", "provenance", "ground_truth")
MIRRORED = tuple(f"{d}/*" for d in SUBFOLDERS)   # remote files here that the export lacks are deleted


class DatasetError(StudioError):
    """An export folder that cannot be written or read back (the message names the file)."""


class NothingToExport(DatasetError):
    """No image has the statuses asked for; the message says what the store holds and what to do."""


def nothing_to_export(store: Store, statuses: tuple[str, ...]) -> NothingToExport:
    counts = store.count_by_status()
    held = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no images at all"
    wanted = " or ".join(statuses)
    if not any(counts.values()):
        todo = "import images and pseudo-label them first"
    else:
        todo = ("accept or correct labels first (the Curate tab, or `python -m pipeline accept --db DB ...`), "
                "or export other statuses (--status)")
    return NothingToExport(f"nothing to export: no image has status {wanted} (the store holds {held}); {todo}")


@dataclass
class ExportReport:
    out_dir: Path
    images: int = 0
    labels: int = 0
    masks: int = 0
    point_pairs: int = 0
    url: str | None = None          # the Hub dataset, when pushed

    def summary(self) -> str:
        return (f"{self.images} images, {self.labels} labels, {self.masks} masks, "
                f"{self.point_pairs} point pairs -> {self.out_dir}" + (f" (pushed to {self.url})" if self.url else ""))


@dataclass
class DatasetImportReport:
    images_added: int = 0
    images_existing: int = 0
    revisions_added: int = 0
    point_pairs_added: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)   # (manifest key, reason)


def export_key(image: ImageRecord) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image.name).stem).strip("._") or "image"
    return f"{stem[:60]}-{image.sha256[:10]}"


# ------------------------------------------------------------------ export
def export_dataset(store: Store, out_dir: str | os.PathLike, *,
                   statuses: str | Iterable[str] = DEFAULT_STATUSES, progress=None,
                   allow_empty: bool = False) -> ExportReport:
    """Write every image with one of `statuses` (and its head label) under `out_dir`.

    `out_dir` must be new, empty, or an earlier export (whose images/labels/masks are replaced).
    When no image has those statuses, NothingToExport says why (nothing is written) unless
    `allow_empty` (e.g. to empty a mirrored Hub dataset).
    """
    out = Path(out_dir)
    st = check_statuses(statuses)
    if not allow_empty and store.count_images(st) == 0:
        raise nothing_to_export(store, st or DEFAULT_STATUSES)
    if out.exists() and any(out.iterdir()) and not (out / "manifest.jsonl").exists():
        raise DatasetError(f"{out} is not empty and is not an earlier export; pick an empty or new folder")
    for sub in SUBFOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).iterdir():         # an earlier export: its files are replaced
            if old.is_file() and not old.is_symlink():
                old.unlink()
    report, rows, all_pairs = ExportReport(out), [], {}
    ids = store.image_ids(st)
    for image_id in (progress(ids) if progress else ids):
        row, pairs = _export_one(store, store.get_image(image_id), out, report)
        rows.append(row)
        if pairs:
            all_pairs[row["key"]] = pairs
    _write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    _write_text(out / "point_pairs.json", json.dumps(all_pairs, indent=1, sort_keys=True))
    _write_text(out / "README.md", _dataset_card(report, st))
    return report


def _export_one(store: Store, image: ImageRecord, out: Path, report: ExportReport) -> tuple[dict, list]:
    key = export_key(image)
    rel_image = f"images/{key}{image.path.suffix}"
    _write_bytes(out / rel_image, store.image_bytes(image.id))
    report.images += 1
    row = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key, "image_id": image.id,
           "image": rel_image, "name": image.name, "sha256": image.sha256, "width": image.width,
           "height": image.height, "status": image.status, "confidence": image.confidence,
           "label": None, "masks": {}, "revision": None}
    if image.head_revision_id is not None:
        label = store.load_label(image.head_revision_id)
        rev = label.revision
        _write_bytes(out / f"labels/{key}.npy", encode_array(label.depth))
        png = write_depth_png(out / f"labels/{key}.png", label.depth, kind=rev.kind)
        report.labels += 1
        row.update(label=f"labels/{key}.npy", label_png=f"labels/{key}.png", kind=rev.kind,
                   depth_sha256=rev.depth_sha256, png_offset=png["offset"], png_scale=png["scale"],
                   model_id=rev.model_id, source=rev.source,
                   revision={"id": rev.id, "number": rev.number, "tool": rev.tool, "author": rev.author,
                             "created_at": rev.created_at, "note": rev.note, "meta": rev.meta})
        for name, mask in sorted(label.masks.items()):
            rel = f"masks/{key}.{name}.png"
            _write_mask_png(out / rel, mask)
            row["masks"][name] = {"file": rel, "dtype": mask.dtype.name}
            report.masks += 1
        row.update(_export_provenance(store, rev, key, out))
    gt = store.ground_truth(image.id)
    if gt is not None:
        row["ground_truth"] = _export_ground_truth(store, gt, key, out)
    pairs = [{"point1": list(p.point1), "point2": list(p.point2),
              "closer_point": f"point{p.closer}", "author": p.author, "flagged": p.flagged,
              "created_at": p.created_at} for p in store.point_pairs(image.id)]
    row["point_pairs"] = pairs
    report.point_pairs += len(pairs)
    return row, pairs


def _export_provenance(store: Store, rev, key: str, out: Path) -> dict:
    """The human-pixel and validity masks of an exported label (as the manifest refers to them)."""
    row = {}
    human = store.human_pixels(rev)
    if human is not None:
        row["human_mask"] = f"provenance/{key}.human.png"
        _write_mask_png(out / row["human_mask"], human)
    valid = store.valid_pixels(rev)
    if valid is not None:
        row["valid_mask"] = f"provenance/{key}.valid.png"
        _write_mask_png(out / row["valid_mask"], valid)
    return row


def _export_ground_truth(store: Store, gt, key: str, out: Path) -> dict:
    values = store.load_label(gt).depth
    _write_bytes(out / f"ground_truth/{key}.npy", encode_array(values))
    entry = {"file": f"ground_truth/{key}.npy", "kind": gt.kind, "source": gt.source, "depth_sha256": gt.depth_sha256,
             "author": gt.author, "created_at": gt.created_at, "note": gt.note}
    valid = store.valid_pixels(gt)
    if valid is not None:
        entry["valid"] = f"ground_truth/{key}.valid.png"
        _write_mask_png(out / entry["valid"], valid)
    return entry


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as e:
        raise DatasetError(f"cannot write {path}: {e.strerror or e}; check the folder is writable") from None


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_mask_png(path: Path, mask: np.ndarray) -> None:
    m = mask.astype(np.uint8) * 255 if mask.dtype == np.bool_ else mask.astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(m, mode="L").save(tmp, format="PNG")


def _dataset_card(report: ExportReport, statuses: tuple[str, ...]) -> str:
    return (f"---\ntags:\n- depth-estimation\n- depth-anything-studio\n---\n"
            f"# Depth labels curated with Depth Anything Studio\n\n"
            f"{report.images} images with status {', '.join(statuses)}; {report.labels} labels, "
            f"{report.masks} masks, {report.point_pairs} point pairs.\n\n"
            "- `images/`: original image files\n"
            "- `labels/KEY.npy`: float32 label (H, W), exact; `labels/KEY.png`: 16-bit PNG, value = "
            "offset + code * scale (offset/scale in the PNG text chunk and in the manifest)\n"
            "- `masks/KEY.ignore.png` (pixels training must skip), `masks/KEY.sky.png` (sky): 255 = in the mask\n"
            "- `provenance/KEY.human.png`: the label's pixels a person set (the rest came from the model in "
            "`source`)\n"
            "- `ground_truth/KEY.npy` (+ `KEY.valid.png`): imported measured depth or disparity\n"
            "- `point_pairs.json`: DA-2K style pairs, points as [row, column]\n"
            "- `manifest.jsonl`: one row per image: status, kind (disparity | metric_depth), provenance "
            "(`source`: `model:<id>`, `human` or `ground_truth:<name>`)\n")


# ------------------------------------------------------------------ Hub
def push_to_hub(out_dir: str | os.PathLike, repo_id: str, *, token: str | None = None,
                private: bool = True) -> str:
    """Upload an export folder as a Hub dataset (created if needed); returns its URL."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(out_dir), repo_type="dataset",
                          commit_message="Upload curated depth labels (Depth Anything Studio export)",
                          delete_patterns=list(MIRRORED))   # the repo mirrors the export: no stale files
    except Exception as e:   # network, auth, name errors: all user-fixable
        raise DatasetError(f"could not push {out_dir} to the Hub dataset {repo_id}: {e}. Check the repo "
                           "name, your token (HF_TOKEN or `hf auth login`) and the network") from None
    return f"https://huggingface.co/datasets/{repo_id}"


# ------------------------------------------------------------------ import
def import_dataset(folder: str | os.PathLike, store: Store, *, author: str = "import",
                   progress=None) -> DatasetImportReport:
    """Read an export folder into `store`: images, head labels, masks, point pairs, statuses.

    Files are checked against the manifest's hashes; a row that fails is listed in
    `problems` and skipped. Re-importing adds nothing (same bytes, same label, same pairs).
    """
    root = Path(folder)
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise DatasetError(f"{root} has no manifest.jsonl; give the folder `python -m pipeline export` wrote")
    rows = []
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise DatasetError(f"{manifest} line {n} is not JSON ({e}); the export is damaged") from None
    report = DatasetImportReport()
    for row in (progress(rows) if progress else rows):
        try:
            _import_row(store, root, row, author, report)
        except (DatasetError, OSError, ValueError, KeyError) as e:
            report.problems.append((str(row.get("key", "?")), str(e)))
    return report


def _import_row(store: Store, root: Path, row: dict, author: str, report: DatasetImportReport) -> None:
    """Check every file of the row first, then write; a bad row leaves nothing behind."""
    data = (root / row["image"]).read_bytes()
    if sha256_bytes(data) != row["sha256"]:
        raise DatasetError(f"{row['image']} does not match its sha256 in the manifest; the file changed")
    label = _read_label(root, row) if row.get("label") else None
    gt = _read_ground_truth(root, row["ground_truth"]) if row.get("ground_truth") else None
    image = store.find_image(row["sha256"])
    if image is None:
        decoded = decode_image(data, name=row["name"])
        image, _ = store.add_image(data, row["name"], width=decoded.width, height=decoded.height,
                                   source=f"dataset:{root.name}", author=author)
        report.images_added += 1
    else:
        report.images_existing += 1
    if label is not None:
        report.revisions_added += _import_label(store, root, row, image, author, *label)
    if gt is not None:
        values, valid, entry = gt
        _, created = store.add_ground_truth(image.id, values, kind=entry["kind"], valid=valid,
                                            source=str(entry["source"]).removeprefix("ground_truth:"),
                                            author=entry.get("author") or author, note=entry.get("note"))
        report.revisions_added += int(created)
    if store.get_image(image.id).status != row["status"]:
        store.set_status(image.id, row["status"], author=author)
    have = {(p.point1, p.point2, p.closer, p.author) for p in store.point_pairs(image.id)}
    for p in row.get("point_pairs", []):
        closer = {"point1": 1, "point2": 2}[p["closer_point"]]
        if (tuple(p["point1"]), tuple(p["point2"]), closer, p["author"]) not in have:
            store.add_point_pair(image.id, p["point1"], p["point2"], closer, author=p["author"],
                                 flagged=bool(p.get("flagged")))
            report.point_pairs_added += 1


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"{path} is not a plain .npy array ({e})") from None


def _read_label(root: Path, row: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(depth float32, {mask name: array}) of a manifest row, checked against its hash."""
    depth = _read_npy(root / row["label"])
    if depth.dtype != np.float32 or sha256_bytes(encode_array(depth)) != row.get("depth_sha256", ""):
        raise DatasetError(f"{row['label']} does not match the manifest (float32 with its depth_sha256)")
    masks = {}
    for name, spec in row.get("masks", {}).items():
        with Image.open(root / spec["file"]) as im:
            m = np.asarray(im)
        masks[name] = m > 0 if spec["dtype"] == "bool" else m.astype(np.uint8)
    return depth, masks


def _import_label(store: Store, root: Path, row: dict, image: ImageRecord, author: str,
                  depth: np.ndarray, masks: dict[str, np.ndarray]) -> int:
    """Save the row's label as a new head unless the head already is it; returns 1 if saved."""
    head = store.head(image.id)
    wanted = {n: sha256_bytes(encode_array(m)) for n, m in masks.items()}
    source, human = _row_provenance(root, row, depth.shape)
    if head is not None and head.depth_sha256 == row["depth_sha256"] and head.masks == wanted \
            and head.source == source:
        return 0
    dropped = {n: None for n in (head.masks if head else {}) if n not in masks}
    rev = row.get("revision") or {}
    note = (f"imported from {root.name}: revision {rev.get('number')} ({rev.get('tool')}) by "
            f"{rev.get('author')} at {rev.get('created_at')}" + (f"; {rev['note']}" if rev.get("note") else ""))
    store.save_revision(image.id, depth, expected_head=head.id if head else None, tool="import",
                        author=author, masks={**dropped, **masks}, kind=row["kind"], note=note,
                        status=row["status"], model_id=row.get("model_id"), source=source, human=human,
                        meta=rev.get("meta") or None)
    return 1


def _read_mask_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im) > 0


def _row_provenance(root: Path, row: dict, shape) -> tuple[str, np.ndarray | None]:
    """(source, human pixels) of an exported label. Rows without `source` (format 1) are read
    conservatively: the original author 'model:<id>' makes a model label; a person's label claims
    every pixel only when it did not start from a model, else none (not recorded)."""
    source = row.get("source")
    if source is None:
        author = str((row.get("revision") or {}).get("author") or "")
        if author.startswith("model:"):
            return author, None
        return "human", np.full(shape, row.get("model_id") is None)
    if source != "human":
        return source, None
    rel = row.get("human_mask")
    return source, _read_mask_png(root / rel) if rel else np.zeros(shape, bool)


def _read_ground_truth(root: Path, entry: dict) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(values, validity or None, the manifest entry) of an exported ground truth, checked against its hash."""
    values = _read_npy(root / entry["file"])
    if values.dtype != np.float32 or sha256_bytes(encode_array(values)) != entry.get("depth_sha256", ""):
        raise DatasetError(f"{entry['file']} does not match the manifest (float32 with its depth_sha256)")
    return values, _read_mask_png(root / entry["valid"]) if entry.get("valid") else None, entry
