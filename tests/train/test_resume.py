"""Checkpointing and resuming: exact continuation, atomic writes, SIGTERM, killed workers, full disk."""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from train_helpers import (  # noqa: F401
    ROOT,
    one_thread,
    quiet,
    run_cli,
    scenes_dir_fixture,
    state_dict_of,
    tiny_config,
)

from pipeline.train import state as st
from pipeline.train.errors import CheckpointWriteError, ResumeError
from pipeline.train.recipe import train
from pipeline.weights.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resumed_run_reproduces_the_loss_curve_bit_for_bit(tmp_path, scenes_dir):
    whole = train(tiny_config(tmp_path / "whole", scenes_dir), log=quiet)
    assert whole.status == "finished" and len(whole.losses) == 6

    cfg = tiny_config(tmp_path / "split", scenes_dir)
    first = train(cfg, should_stop=lambda step: step >= 3, log=quiet)
    assert first.status == "stopped" and first.step == 3 and len(first.losses) == 3
    second = train(cfg, resume=True, log=quiet)
    assert second.status == "finished" and len(second.losses) == 3

    assert first.losses + second.losses == whole.losses                  # exact, not approximately
    a, b = state_dict_of(whole.checkpoint), state_dict_of(second.checkpoint)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    logged = [row["loss"] for row in st.read_metrics(tmp_path / "split")]
    assert [row["step"] for row in st.read_metrics(tmp_path / "split")] == [1, 2, 3, 4, 5, 6]
    assert logged == [round(v, 6) for v in whole.losses]


def test_resume_after_a_half_written_last_metrics_line(tmp_path, scenes_dir):
    """kill -9 mid-write leaves a cut-off last line: reading skips it, resuming drops it."""
    cfg = tiny_config(tmp_path / "run", scenes_dir)
    train(cfg, should_stop=lambda step: step >= 3, log=quiet)
    path = tmp_path / "run" / st.METRICS_FILE
    with open(path, "a") as f:
        f.write('{"step": 4, "loss": 0.12')                                  # no closing brace, no newline
    assert [r["step"] for r in st.read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert train(cfg, resume=True, log=quiet).status == "finished"
    assert [r["step"] for r in st.read_metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    assert all(ln.startswith("{") and ln.endswith("}") for ln in path.read_text().splitlines())


def test_damaged_metrics_line_before_the_last_is_a_clear_error(tmp_path):
    (tmp_path / st.METRICS_FILE).write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ResumeError, match="line 2"):
        st.read_metrics(tmp_path)


def test_checkpoint_records_config_data_snapshot_and_state_loads_weights_only(tmp_path, scenes_dir):
    cfg = tiny_config(tmp_path / "run", scenes_dir, steps=4, save_every=2)
    result = train(cfg, log=quiet)
    loaded = load_model(result.checkpoint)
    meta = loaded.meta
    assert meta["train_config"] == cfg.to_dict() and meta["step"] == 4
    assert meta["data"]["count"] == 8 and len(meta["data"]["items"]) == 8
    item = meta["data"]["items"][0]
    assert set(item) >= {"image_id", "revision_id", "sha256"} and len(item["sha256"]) == 64

    state = torch.load(tmp_path / "run" / st.STATE_FILE, weights_only=True)       # plain data only
    assert state["step"] == 4 and state["checkpoint"] == st.FINAL_FILE
    assert state["sampler"]["consumed"] == {"labelled": 8, "pseudo": 0}     # 4 steps x batch 2
    assert state["data_sha256"] == meta["data"]["sha256"]
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert sorted(p.name for p in (tmp_path / "run" / st.CKPT_DIR).iterdir()) == ["step-000002.safetensors"]


def test_resume_restores_the_global_rngs(tmp_path, scenes_dir):
    cfg = tiny_config(tmp_path / "run", scenes_dir, steps=4)
    train(cfg, should_stop=lambda step: step >= 2, log=quiet)
    expected = (torch.rand(3), np.random.rand(3))
    saved = torch.load(tmp_path / "run" / st.STATE_FILE, weights_only=True)["rng"]
    st.restore_rng(saved)
    again = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123), np.random.seed(123)
    assert not torch.equal(torch.rand(3), expected[0])
    st.restore_rng(saved)
    assert torch.equal(torch.rand(3), again[0]) and np.array_equal(np.random.rand(3), again[1])


def test_resume_without_a_run_and_with_changed_data_are_clear_errors(tmp_path, scenes_dir):
    with pytest.raises(ResumeError, match="nothing to resume"):
        train(tiny_config(tmp_path / "empty", scenes_dir), resume=True, log=quiet)
    cfg = tiny_config(tmp_path / "run", scenes_dir, steps=4)
    train(cfg, should_stop=lambda step: step >= 2, log=quiet)
    data2 = tmp_path / "data2"
    data2.mkdir()
    for p in sorted(scenes_dir.iterdir())[:6]:
        (data2 / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ResumeError, match="training data changed"):
        train(tiny_config(tmp_path / "run", data2, steps=4), resume=True, log=quiet)


def test_failed_write_midway_leaves_previous_checkpoint_intact(tmp_path, scenes_dir, monkeypatch):
    cfg = tiny_config(tmp_path / "run", scenes_dir, steps=6, save_every=2)
    train(cfg, should_stop=lambda step: step >= 2, log=quiet)
    before = state_dict_of(tmp_path / "run" / "checkpoints" / "step-000002.safetensors")
    state_before = (tmp_path / "run" / st.STATE_FILE).read_bytes()

    import safetensors.torch

    def half_then_enospc(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_enospc)
    with pytest.raises(CheckpointWriteError, match=r"step-000002\.safetensors is intact"):
        train(cfg, resume=True, log=quiet)
    monkeypatch.undo()

    run = tmp_path / "run"
    assert (run / st.STATE_FILE).read_bytes() == state_before
    after = state_dict_of(run / "checkpoints" / "step-000002.safetensors")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not [p for p in run.rglob("*.tmp")]                               # no half-written leftovers
    assert train(cfg, resume=True, log=quiet).status == "finished"          # and the run goes on


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                        # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _cli_args(out, data, steps, save_every):
    return ["--data", str(data), "--encoder", "vitt", "--student-init", "random", "--feature-target", "init",
            "--steps", str(steps), "--batch-size", "2",
            "--input-size", "28", "--save-every", str(save_every), "--lr", "1e-4", "--device", "cpu",
            "--out", str(out), "--threads", "1"]


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_nothing_is_lost(tmp_path, scenes_dir):
    out = tmp_path / "run"
    ok = run_cli(_cli_args(out, scenes_dir, 4, 2) + [], timeout=300)
    assert ok.returncode == 0, ok.stderr
    size = (out / st.FINAL_FILE).stat().st_size
    good = state_dict_of(out / st.FINAL_FILE)
    # a longer run from the same folder: its first checkpoint no longer fits on the "disk"
    full = run_cli(["--resume", "--out", str(out), "--steps", "6", "--threads", "1"],
                   preexec_fn=_limit_file_size(size // 2))
    assert full.returncode == 2, full.stderr
    assert "error: could not write checkpoint" in full.stderr and "Traceback" not in full.stderr
    assert "intact" in full.stderr
    kept = state_dict_of(out / st.FINAL_FILE)
    assert all(np.array_equal(good[k], kept[k]) for k in good)
    assert torch.load(out / st.STATE_FILE, weights_only=True)["step"] == 4


def test_sigterm_in_process_saves_then_stops_and_resume_finishes(tmp_path, scenes_dir):
    cfg = tiny_config(tmp_path / "run", scenes_dir, steps=8, save_every=100)

    def send_sigterm_at_2(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return False

    old = signal.getsignal(signal.SIGTERM)
    stopped = train(cfg, should_stop=send_sigterm_at_2, log=quiet)
    assert signal.getsignal(signal.SIGTERM) is old                          # handler restored
    assert stopped.status == "stopped" and stopped.step == 3                 # noticed at the next step boundary
    state = torch.load(tmp_path / "run" / st.STATE_FILE, weights_only=True)
    assert state["step"] == 3 and state["checkpoint"] == "checkpoints/step-000003.safetensors"
    assert train(cfg, resume=True, log=quiet).step == 8


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sigterm_saves_and_sigkill_loses_nothing_saved(tmp_path, scenes_dir, sig):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    entry = [sys.executable, "-m", "pipeline", "train"]
    proc = subprocess.Popen(entry + _cli_args(out, scenes_dir, 10_000, 2), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (out / st.STATE_FILE).exists():
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = torch.load(out / st.STATE_FILE, weights_only=True)
    assert (out / state["checkpoint"]).is_file()
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, stderr
        assert "stopped at step" in stdout
        rows = st.read_metrics(out)
        assert state["step"] == rows[-1]["step"]                             # saved at the step it stopped
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = run_cli(["--resume", "--out", str(out), "--steps", str(state["step"] + 1), "--threads", "1"])
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(out / st.STATE_FILE, weights_only=True)["step"] == state["step"] + 1
    json.loads((out / "train_config.json").read_text())
