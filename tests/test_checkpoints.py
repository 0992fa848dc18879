"""pipeline.weights.loading: formats, what is inferred from where, conversions, atomic saves, errors.

Uses the tiny `vitt` encoder (random weights, seeded) so every load takes milliseconds.
"""
from __future__ import annotations

import argparse
import logging
import pickle

import pytest
import torch
from safetensors import SafetensorError

from pipeline.cli import checkpoints as cli
from pipeline.config import ModelConfig
from pipeline.model import build_model
from pipeline.weights import loading as ck
from pipeline.weights.loading import (
    CheckpointError,
    inspect_checkpoint,
    load_model,
    save_checkpoint,
    save_official_checkpoint,
    untrained_model,
)
from pipeline.weights.state_dict import convert_official_state_dict, to_official_state_dict

X = torch.linspace(-2, 2, 3 * 28 * 42).reshape(1, 3, 28, 42)   # a small normalised input (B, 3, H, W)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("vitt")
    with torch.no_grad():   # non-trivial head so that outputs differ between variants
        for p in model.depth_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _official_sd(model) -> dict:
    return to_official_state_dict(dict(model.state_dict()), model.config.encoder)


# ----------------------------------------------------------------------------- formats

def test_official_pth_round_trip_restores_and_drops_mask_token(tiny, tmp_path):
    path = save_official_checkpoint(tiny, tmp_path / "depth_anything_v2_vitt.pth")
    on_disk = torch.load(path, weights_only=True)
    assert on_disk["pretrained.mask_token"].shape == (1, 64)   # official layout keeps the token
    loaded = load_model(path)
    assert loaded.config == ModelConfig("vitt", "v2") and loaded.model_id == "depth_anything_v2_vitt"
    assert _same_weights(loaded.model, tiny)
    with torch.inference_mode():
        assert torch.equal(loaded.model(X), tiny(X))


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
])
def test_training_wrappers_are_unwrapped(tiny, tmp_path, wrap):
    path = tmp_path / "weights.pt"
    torch.save(wrap(_official_sd(tiny)), path)
    loaded = load_model(path)
    assert _same_weights(loaded.model, tiny) and loaded.model_id == "weights"
    assert loaded.config == ModelConfig("vitt", "v2")   # nothing in the name: the defaults


def test_plain_fp16_safetensors_loads_as_float32(tiny, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.half().contiguous() for k, v in tiny.state_dict().items()}
    path = tmp_path / "depth_anything_v2_vitt_fp16.safetensors"
    save_file(sd, path)
    loaded = load_model(path)
    assert inspect_checkpoint(path)["format"] == "safetensors"
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, sd[k].float()), k


def test_project_checkpoint_is_self_describing(tiny, tmp_path):
    metric = build_model("vitt", metric=True, max_depth=80.0)
    metric.load_state_dict(tiny.state_dict())
    path = save_checkpoint(metric, tmp_path / "anything.safetensors", model_id="outdoor-student",
                           meta={"epochs": 2, "lr": 5e-6})
    loaded = load_model(path)   # the file name says nothing; the metadata says everything
    assert loaded.config == ModelConfig("vitt", "v2", True, 80.0)
    assert loaded.model_id == "outdoor-student" and loaded.meta == {"epochs": 2, "lr": 5e-6}
    assert _same_weights(loaded.model, metric)
    info = inspect_checkpoint(path)
    assert (info["format"], info["metric"], info["max_depth"], info["known_from"]) == \
        ("project-safetensors", True, 80.0, "project metadata")
    with pytest.raises(CheckpointError, match="this is a metric depth checkpoint"):
        load_model(path, metric=False)
    with pytest.raises(CheckpointError, match="max depth 80 m; you asked for 20 m"):
        load_model(path, max_depth=20)
    assert load_model(path, encoder="vitt", metric=True, max_depth=80).config == loaded.config


def test_save_accepts_a_loaded_checkpoint_and_untrained_models_say_so(tmp_path):
    untrained = untrained_model(ModelConfig("vitt", "v1"))
    assert "untrained" in untrained.model_id and untrained.config.version == "v1"
    path = save_checkpoint(untrained, tmp_path / "u.safetensors")
    back = load_model(path)
    assert back.config == untrained.config and back.model_id == "u"
    assert _same_weights(back.model, untrained.model)


# ----------------------------------------------------------------------------- what is inferred from where

def test_file_name_says_metric_and_max_depth(tiny, tmp_path):
    indoor = save_official_checkpoint(tiny, tmp_path / "depth_anything_v2_metric_hypersim_vitt.pth")
    outdoor = save_official_checkpoint(tiny, tmp_path / "depth_anything_v2_metric_vkitti_vitt.pth")
    assert load_model(indoor).config == ModelConfig("vitt", "v2", True, 20.0)
    out = load_model(outdoor)
    assert out.config == ModelConfig("vitt", "v2", True, 80.0)
    with torch.inference_mode():
        y = out.model(X)
    assert 0 < y.min() and y.max() < 80 and not torch.allclose(y, tiny(X))


def test_explicit_arguments_override_file_name_hints(tiny, tmp_path, caplog):
    path = save_official_checkpoint(tiny, tmp_path / "depth_anything_v2_metric_vkitti_vitt.pth")
    with caplog.at_level(logging.WARNING, logger="pipeline.weights.loading"):
        loaded = load_model(path, metric=False, version="v1")
    assert loaded.config == ModelConfig("vitt", "v1", False)
    assert "file name suggests metric=True" in caplog.text


def test_v1_hub_cache_path_is_recognised(tiny, tmp_path):
    snap = tmp_path / "models--LiheYoung--depth_anything_vits14" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    assert ck.facts_from_name(snap / "pytorch_model.bin") == {"encoder": "vits", "version": "v1", "metric": False}


def test_wrong_encoder_names_the_file_and_both_sizes(tiny, tmp_path):
    path = save_official_checkpoint(tiny, tmp_path / "mine.pth")
    with pytest.raises(CheckpointError) as e:
        load_model(path, encoder="vitl")
    assert str(e.value).startswith(f"{path}: this is a vitt checkpoint; you asked for vitl")


def test_metric_with_v1_is_refused(tiny, tmp_path):
    path = save_official_checkpoint(tiny, tmp_path / "mine.pth")
    with pytest.raises(Exception, match="metric models exist only for version v2"):
        load_model(path, version="v1", metric=True)


def test_vitg_swiglu_keys_convert_both_ways():
    sd = {"pretrained.cls_token": torch.zeros(1, 1, 8), "pretrained.mask_token": torch.zeros(1, 8),
          "pretrained.blocks.3.mlp.w12.weight": torch.ones(32, 8), "pretrained.blocks.3.mlp.w3.bias": torch.ones(8),
          "depth_head.projects.0.weight": torch.ones(2, 8, 1, 1)}
    ours = convert_official_state_dict(sd)
    assert set(ours) == {"pretrained.cls_token", "pretrained.blocks.3.mlp.fc1.weight",
                         "pretrained.blocks.3.mlp.fc2.bias", "depth_head.projects.0.weight"}
    back = to_official_state_dict(ours, "vitg")
    assert set(back) == set(sd) and torch.equal(back["pretrained.blocks.3.mlp.w12.weight"], sd["pretrained.blocks.3.mlp.w12.weight"])
    assert ".mlp.fc1." in " ".join(to_official_state_dict(ours, "vitl"))   # only vitg uses SwiGLU


# ----------------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),      # what torch.save raises on a full disk
    SafetensorError("File too large"),          # what safetensors raises on a full disk
], ids=["oserror", "safetensors-error"])
def test_failed_save_leaves_the_previous_file_intact(tiny, tmp_path, monkeypatch, failure):
    import safetensors.torch

    path = save_checkpoint(tiny, tmp_path / "student.safetensors", model_id="v1-good")
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise failure

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(CheckpointError, match="previous file is untouched"):
        save_checkpoint(tiny, path, model_id="v2-broken")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]   # no temp files left behind
    assert load_model(path).model_id == "v1-good"


# ----------------------------------------------------------------------------- errors a user can act on

def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.pth", "checkpoint file not found"),
    (lambda d: _write(d, "empty.pth", b""), "empty file"),
    (lambda d: _write(d, "notes.pth", b"these are not weights\n" * 10), "not a checkpoint: neither a PyTorch"),
    (lambda d: _write(d, "random.pth", __import__("random").Random(0).randbytes(4096)),
     "not a checkpoint: neither a PyTorch"),                           # not "Python objects other than tensors"
    (lambda d: _write(d, "garbage.pth", b"\x80\x04" + b"\x01garbage" * 50), "not a readable checkpoint"),
    (lambda d: d, "is a folder"),
])
def test_unreadable_files(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(path)
    assert str(path) in str(e.value)


def test_truncated_files(tiny, tmp_path):
    for name, save in (("a.safetensors", save_checkpoint), ("b.pth", save_official_checkpoint)):
        full = save(tiny, tmp_path / f"full_{name}")
        cut = _write(tmp_path, name, full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="truncated") as e:
            load_model(cut)
        assert str(cut) in str(e.value)


def test_wrong_content_and_wrong_keys(tiny, tmp_path):
    cases = {
        "list.pth": ([torch.zeros(3)], "expected a dict of tensors"),
        "nothing.pth": ({"epoch": 3, "lr": 0.1}, "holds no tensors"),
        "hf.pth": ({"backbone.embeddings.cls_token": torch.zeros(1, 1, 64)}, "transformers checkpoint"),
        "width.pth": ({"pretrained.cls_token": torch.zeros(1, 1, 100)}, "matches no known size"),
    }
    sd = _official_sd(tiny)
    cases["partial.pth"] = ({k: v for k, v in sd.items() if "refinenet1" not in k}, "do not fit a vitt V2 relative")
    cases["shape.pth"] = ({**sd, "depth_head.projects.0.bias": torch.zeros(3)}, r"1 shape")
    for name, (obj, message) in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match=message) as e:
            load_model(path)
        assert str(path) in str(e.value), name


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_plain_pickle_with_code_is_refused_without_running_it(tiny, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _official_sd(tiny), "hook": _Exploit(marker)}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    assert not marker.exists()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CheckpointError, match="depth-anything-v2-small"):
        load_model("depth-anything-v3-huge")


# ----------------------------------------------------------------------------- inspect + CLI

def test_inspect_counts_parameters_and_names_the_variant(tiny, tmp_path):
    path = save_official_checkpoint(tiny, tmp_path / "depth_anything_v2_metric_hypersim_vitt.pth")
    info = inspect_checkpoint(path)
    assert info["parameters"] == sum(p.numel() for p in tiny.parameters())
    assert (info["encoder"], info["version"], info["metric"], info["max_depth"], info["known_from"]) == \
        ("vitt", "v2", True, 20.0, "file name")
    assert info["fits_model"] is True and info["dtypes"] == ["float32"]


def test_cli_inspect_prints_what_the_file_is(tiny, tmp_path, capsys):
    path = save_checkpoint(tiny, tmp_path / "s.safetensors", model_id="student-3", meta={"note": "x"})
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["inspect", str(path)])) == 0
    out = capsys.readouterr().out
    assert "project-safetensors" in out and "student-3" in out and "vitt" in out
    with pytest.raises(CheckpointError, match="not found"):
        cli.run(parser.parse_args(["inspect", str(tmp_path / "nope.pth")]))


def test_loaded_models_are_trainable_float32(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "half.safetensors"
    save_file({k: v.half().contiguous() for k, v in tiny.state_dict().items()}, path)
    model = load_model(path).model.train()
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    model(X).mean().backward()
    assert model.pretrained.pos_embed.grad is not None and model.depth_head.projects[0].weight.grad.abs().sum() > 0


def test_project_metadata_that_contradicts_the_weights_is_reported(tiny, tmp_path):
    import json

    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    meta = {"format": ck.PROJECT_FORMAT, "format_version": "1", "model_id": "odd", "meta": "{}",
            "config": json.dumps(ModelConfig("vits").to_dict())}
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, path, metadata=meta)
    with pytest.raises(CheckpointError, match="metadata says vits but the weights are vitt"):
        load_model(path)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, bad, metadata={**meta, "config": "{oops"})
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        load_model(bad)


def test_cli_errors_are_one_line_whatever_the_name(tmp_path, capsys):
    from pipeline import cli
    weird = tmp_path / "two\nlines.pth"
    weird.write_bytes(b"\x00" * 64)
    from PIL import Image
    Image.new("RGB", (32, 24)).save(tmp_path / "x.png")
    rc = cli.main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(weird), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len([ln for ln in err if ln.startswith("error: ")]) == 1
    assert "not a checkpoint" in err[-1] and "two lines.pth" in err[-1]
