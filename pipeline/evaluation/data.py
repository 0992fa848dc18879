"""What `python -m pipeline evaluate` scores against: a data folder, the store's export, or the store.

- A folder of images with same-named ground truth (the layout of `pipeline.files.dataset_layout`, which
  training reads too), plus point pairs (a_pairs.json, or a pairs.json / DA-2K annotations.json
  table keyed by relative path, name or stem).
- The store's export (manifest.jsonl, pipeline.intake.dataset_export): only what no model produced is
  scored: the exported ground truth, the human pixels of a label (`provenance/KEY.human.png`),
  point pairs. A label that is a model's pseudo-label is not ground truth: such images are skipped
  with that reason (before format_version 2 exports carried no provenance: a label is used only
  when its author was a person and it did not start from a model).
- The store itself (`store_items`): the same rule through `Store.evidence` (pipeline/store/provenance.py).
Items carry their own `gt_kind` ("depth" in metres or "disparity") when the data says what it holds.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import dataset_layout as layout
from .protocol import EvalItem, EvaluationDataError, parse_pairs

PAIR_FILES = ("pairs.json", "annotations.json", "point_pairs.json")   # {image name, relative path or key: [DA-2K pairs]}
STORE_GT_KINDS = {"disparity": "disparity", "metric_depth": "depth"}   # store / manifest kind -> GT kind


def read_array(path: Path, scale: float = 1.0) -> np.ndarray:
    """GT / prediction file -> float64 (H, W), NaN where invalid, times `scale`; the formats are
    pipeline.files.dataset_layout's (`.npy` without pickles, 16-bit PNG calibrated or raw with 0 invalid)."""
    try:
        return layout.read_ground_truth(path).values * scale
    except layout.GroundTruthFileError as e:
        raise EvaluationDataError(str(e)) from None


def read_mask(path: Path) -> np.ndarray:
    """A mask file (.npy or 8/16-bit PNG) -> bool (H, W), True where nonzero."""
    try:
        return layout.read_mask(path)
    except layout.GroundTruthFileError as e:
        raise EvaluationDataError(str(e)) from None


def _pair_table(root: Path) -> dict[str, list]:
    for name in PAIR_FILES:
        if (root / name).is_file():
            try:
                return json.loads((root / name).read_text())
            except (OSError, ValueError) as e:
                raise EvaluationDataError(f"cannot read point pairs {root / name}: {e}") from e
    return {}


def _item_pairs(image: Path, root: Path, table: dict) -> np.ndarray | None:
    rel = image.relative_to(root).as_posix()
    found = next((table[k] for k in (rel, image.name, image.stem) if k in table), None)
    side = image.with_name(f"{image.stem}_pairs.json")
    if found is None and side.is_file():
        found = json.loads(side.read_text())
    return None if found is None else parse_pairs(found)


def folder_items(root: Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """Images of a folder (root/ or root/images/) with their ground truth, masks and point pairs."""
    from ..files.image_io import decode_image
    images = set(layout.image_files(root))
    table = _pair_table(root)
    images |= {root / k for k in table if (root / k).is_file()}
    items = []
    for img in sorted(images):
        gt, mask = layout.find_ground_truth(img), layout.find_mask(img)
        items.append(EvalItem(
            name=img.relative_to(root).with_suffix("").as_posix(),
            load_image=lambda p=img: decode_image(p).rgb,
            load_gt=None if gt is None else (lambda p=gt: read_array(p, gt_scale)),
            load_mask=None if mask is None else (lambda p=mask: read_mask(p)),
            pairs=_item_pairs(img, root, table)))
    return items


def find_items(root: str | Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """The evaluation items of a data folder: the store's export (manifest.jsonl) or a plain folder."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationDataError(f"data folder {root} does not exist; pass a folder of images with ground truth")
    items = export_items(root, gt_scale) if (root / "manifest.jsonl").is_file() else folder_items(root, gt_scale)
    if not items:
        raise EvaluationDataError(f"no images found in {root} or {root / 'images'}: put .jpg / .png images "
                                  "there with same-named ground truth (see pipeline.files.dataset_layout)")
    return items


# ----------------------------------------------------------------------------- the store's export

def _masks_loader(files: list[Path], keep: list[Path]) -> Callable[[], np.ndarray] | None:
    """Pixels to score: inside every `keep` mask and outside every `files` mask (ignore, sky)."""
    if not files and not keep:
        return None

    def load() -> np.ndarray:
        parts = [read_mask(f) for f in keep] + [~read_mask(f) for f in files]
        return np.logical_and.reduce(parts)
    return load


def _export_label(root: Path, row: dict, gt_scale: float) -> tuple[Callable | None, list[Path], str]:
    """(GT loader, masks that must be set, provenance note) of one manifest row's independent values."""
    gt = row.get("ground_truth")
    if gt:
        keep = [root / gt["valid"]] if gt.get("valid") else []
        return (lambda p=root / gt["file"]: read_array(p, gt_scale)), keep, f"ground truth ({gt['source']})"
    label, source = row.get("label"), row.get("source")
    if not label:
        return None, [], "no label"
    author = str((row.get("revision") or {}).get("author") or "")
    if source is None:                                  # an export from before provenance (format 1)
        if author.startswith("model:") or row.get("model_id") is not None:
            return None, [], f"a label that started from {row.get('model_id') or author} (no provenance recorded)"
        return (lambda p=root / label: read_array(p, gt_scale)), [], f"a label typed in by {author}"
    if source.startswith("ground_truth:"):
        keep = [root / row["valid_mask"]] if row.get("valid_mask") else []
        return (lambda p=root / label: read_array(p, gt_scale)), keep, f"ground truth ({source})"
    if source == "human" and row.get("human_mask"):
        return ((lambda p=root / label: read_array(p, gt_scale)), [root / row["human_mask"]],
                "the pixels a person set")
    return None, [], f"the label is {source}'s (a model's pseudo-label is not ground truth)"


def export_items(root: Path, gt_scale: float = 1.0) -> list[EvalItem]:
    """The store's export: per row, its ground truth or the human pixels of its label (never a
    model's pseudo-label), ignore and sky masks left out, and its point pairs. Items are named KEY."""
    from ..files.image_io import decode_image
    items, table = [], _pair_table(root)
    for n, line in enumerate((root / "manifest.jsonl").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = root / row["image"]
        except (ValueError, KeyError, TypeError) as e:
            raise EvaluationDataError(f"{root / 'manifest.jsonl'} line {n} is not an export row ({e}); "
                                      "give the folder `python -m pipeline export` wrote") from None
        key = str(row.get("key") or Path(row["image"]).stem)
        load_gt, keep, note = _export_label(root, row, gt_scale)
        gt_entry = row.get("ground_truth")
        kind = STORE_GT_KINDS.get(gt_entry["kind"] if gt_entry else row.get("kind"))
        drop = [] if gt_entry else [root / m["file"] for m in (row.get("masks") or {}).values()
                                    if isinstance(m, dict) and m.get("file")]
        pairs = row.get("point_pairs") or table.get(key)
        items.append(EvalItem(
            name=key, load_image=lambda p=image: decode_image(p).rgb, load_gt=load_gt,
            load_mask=_masks_loader(drop, keep) if load_gt else None,
            pairs=parse_pairs(pairs) if pairs else None, gt_kind=kind if load_gt else None,
            note=note if load_gt else f"not scored densely: {note}"))
    return items


# ----------------------------------------------------------------------------- the store itself

def store_items(store, fraction: float = 1.0) -> tuple[list[EvalItem], list[dict]]:
    """(items, skipped) of the store's images in the held-out split (`fraction` of images by hash;
    1.0 = all) that hold independent evidence; the others are skipped with the reason."""
    from .holdout import evidence_items
    items, skipped = evidence_items(store, fraction)
    return [EvalItem(name=c.name, load_image=c.load_rgb, load_gt=c.load_gt, load_mask=c.load_mask,
                     pairs=c.pairs, gt_kind=c.protocol.gt_kind if c.load_gt else None, note=c.note)
            for c in items], skipped
