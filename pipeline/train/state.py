"""Saving and resuming a run: checkpoints, the training-state file, RNG states, rotation.

The folder's layout (file names) is pipeline.train.run_folder's; this module writes and reads them.

Order of writes: the weights first (atomically), then the state (atomically) naming them, then
old step checkpoints beyond the last `KEEP` are deleted. A crash or a full disk at any point
leaves a consistent (state, weights) pair: the state always names a file that exists.

The state file holds plain tensors, numbers, strings, lists and dicts only, and is read back
with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, atomic_write
from ..errors import CheckpointError
from ..weights.loading import save_checkpoint
from .errors import CheckpointWriteError, ResumeError
from .run_folder import CKPT_DIR, FINAL_FILE, METRICS_FILE, STATE_FILE, RunFolder, step_checkpoint_name  # noqa: F401

KEEP = 2
STATE_VERSION = 1


# ----------------------------------------------------------------------------- RNG

def capture_rng() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# ----------------------------------------------------------------------------- writing

def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through pipeline.atomic (the old file survives any failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        raise CheckpointWriteError(f"could not write {path}: {e}; free disk space and resume with --resume "
                                   f"(the previous state is intact)") from e


def write_checkpoint(model, out_dir: Path, rel_name: str, *, model_id: str, meta: dict, previous: str | None) -> Path:
    """save_checkpoint (atomic) with a user-facing error that names the intact previous checkpoint."""
    from safetensors import SafetensorError  # a full disk surfaces as this, not as OSError

    path = out_dir / rel_name
    try:
        return save_checkpoint(model, path, model_id=model_id, meta=meta)
    except (CheckpointError, OSError, SafetensorError) as e:
        keep = f"the previous checkpoint {out_dir / previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"could not write checkpoint {path} ({e}); {keep}. Free disk space and run "
                                   f"again with --resume") from e


def write_state(out_dir: Path, state: dict) -> None:
    atomic_torch_save({"version": STATE_VERSION, **state}, RunFolder(out_dir).state)


def rotate(out_dir: Path, keep_names: list[str]) -> None:
    """Delete step checkpoints other than `keep_names` (relative names). Never touches the final weights."""
    keep = {(out_dir / n).resolve() for n in keep_names}
    for p in RunFolder(out_dir).step_checkpoints():
        if p.resolve() not in keep:
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading

def read_state(out_dir: Path) -> dict:
    path = RunFolder(out_dir).state
    if not path.is_file():
        raise ResumeError(f"nothing to resume in {out_dir}: {path.name} not found; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ResumeError(f"cannot read {path} ({e}); start a new run with --init "
                          f"{RunFolder(out_dir).checkpoints}/<latest>") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ResumeError(f"{path} is not a training state this version understands; start a new run")
    if not (out_dir / state["checkpoint"]).is_file():
        raise ResumeError(f"{path} names {state['checkpoint']}, which is missing; start a new run")
    return state


def append_metrics(out_dir: Path, row: dict) -> None:
    with open(RunFolder(out_dir).metrics, "a") as f:
        f.write(json.dumps(row) + "\n")


def _metric_rows(path: Path) -> list[tuple[str, dict]]:
    """(line, row) of each decodable line. A last line cut off mid-write (kill -9) is dropped;
    an undecodable line anywhere else means the file is damaged and raises ResumeError."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    rows = []
    for i, ln in enumerate(lines):
        try:
            row = json.loads(ln)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:
                break                                   # half-written last line: skip it
            raise ResumeError(f"{path} line {i + 1} is damaged ({e}); delete that line or start a new run") from None
        rows.append((ln, row))
    return rows


def truncate_metrics(out_dir: Path, step: int) -> None:
    """Drop logged rows after `step` (a resumed run rewrites them) and a half-written last line."""
    path = RunFolder(out_dir).metrics
    if not path.is_file():
        return
    rows = [ln for ln, row in _metric_rows(path) if row.get("step", 0) <= step]
    atomic_write(path, "".join(r + "\n" for r in rows))


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The logged rows; a last line cut off mid-write is skipped."""
    path = RunFolder(out_dir).metrics
    return [row for _, row in _metric_rows(path)] if path.is_file() else []
