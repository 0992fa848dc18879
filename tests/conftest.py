"""Shared fixtures: the reference fixtures of ../shared/reference and tiny models."""
from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning, so the app servers and job
# subprocesses the tests start do not fight the test process for the 2 cores (a vits forward was
# about 3x slower with spinning threads under contention).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import atexit
import shutil
import tempfile

# Exported models (pipeline/runtime/cache.py) go to a folder of this test session, not to the user's
# ~/.cache; servers and job subprocesses the tests start inherit it. Set DA_STUDIO_CACHE_DIR to keep
# exports between runs.
if not os.environ.get("DA_STUDIO_CACHE_DIR"):
    os.environ["DA_STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="da-studio-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DA_STUDIO_CACHE_DIR"], True)

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("DA_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _make_weights_module():
    sys.path.insert(0, str(REFERENCE_DIR))
    try:
        import make_weights
    finally:
        sys.path.pop(0)
    return make_weights


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "vits_reference.npz").exists():
        message = f"reference fixtures not found in {REFERENCE_DIR} (set DA_REFERENCE_DIR)"
        if os.environ.get("CI"):        # CI must prove parity: a missing fixture is a failure there
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference(reference_dir):
    """The official code's numbers for vits on the Middlebury motorcycle image."""
    return dict(np.load(reference_dir / "vits_reference.npz"))


@pytest.fixture(scope="session")
def official_shapes(reference_dir) -> dict:
    return json.loads((reference_dir / "official_state_dict_shapes.json").read_text())


@pytest.fixture(scope="session")
def recipe_state_dict(official_shapes) -> dict[str, torch.Tensor]:
    """The deterministic vits weights, as an official .pth state dict would hold them."""
    mw = _make_weights_module()
    return {k: torch.from_numpy(v) for k, v in mw.make_state_dict(official_shapes["shapes"]["vits"]).items()}


@pytest.fixture(scope="session")
def recipe_pth(recipe_state_dict, tmp_path_factory) -> Path:
    """An official-format V2 vits checkpoint file (`depth_anything_v2_vits.pth` layout)."""
    path = tmp_path_factory.mktemp("weights") / "depth_anything_v2_vits.pth"
    torch.save(recipe_state_dict, path)
    return path


@pytest.fixture(scope="session")
def motorcycle_rgb(reference) -> np.ndarray:
    return reference["image_rgb"]



@pytest.fixture(scope="session")
def recipe_model(recipe_state_dict):
    """recipe_model(version="v2", metric=False, max_depth=20.0): vits with the recipe weights, built
    once per session and variant, as the checkpoint loader would build it (mask_token dropped)."""
    from pipeline import build_model
    built = {}

    def make(version: str = "v2", metric: bool = False, max_depth: float = 20.0):
        key = (version, metric, max_depth)
        if key not in built:
            model = build_model("vits", version, metric=metric, max_depth=max_depth)
            model.load_state_dict({k: v for k, v in recipe_state_dict.items() if k != "pretrained.mask_token"})
            built[key] = model
        return built[key]
    return make


@pytest.fixture
def sleeping_jobs(monkeypatch):
    """Background jobs start a detached `sleep 60` instead of their supervisor and command (fast
    scheduling tests). When a sleeper ends (killed, cancelled) a thread runs what the supervisor runs
    then, `jobs.job_ended` (the exit path that settles the record and advances the queue).
    Yields {job id: Popen}; every sleeper is killed and every exit path joined at teardown."""
    import subprocess
    import threading

    from pipeline.jobs import manager as jobs
    procs: dict[int, subprocess.Popen] = {}
    threads: list[threading.Thread] = []
    closing = threading.Event()

    def exit_path(db_path, job_id: int, proc: subprocess.Popen) -> None:
        proc.wait()
        if not closing.is_set():                      # teardown kills every sleeper: no queue to move then
            jobs.job_ended(db_path, job_id, pid=proc.pid, returncode=proc.returncode)

    def spawn(db_path, job):
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        procs[job.id] = proc
        threads.append(threading.Thread(target=exit_path, args=(db_path, job.id, proc), daemon=True))
        threads[-1].start()
        return proc.pid

    monkeypatch.setattr(jobs, "_spawn", spawn)
    yield procs
    closing.set()
    for thread in list(threads):
        thread.join(timeout=0.05)                     # let exit paths already under way finish
    for proc in list(procs.values()):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for thread in list(threads):
        thread.join(timeout=30)
