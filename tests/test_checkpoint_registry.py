"""pipeline.weights.registry: the known checkpoints, and the Hub path for real without network.

The Hub download is exercised through huggingface_hub itself: a temporary cache is populated in
the exact layout it uses (refs/main -> snapshots/<commit>/<file> -> ../../blobs/<hash>) and the
library is put in offline mode, so `hf_hub_download` resolves from that cache or fails offline.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from pipeline.cli import checkpoints as cli
from pipeline.config import ModelConfig
from pipeline.errors import CheckpointError
from pipeline.weights import registry
from pipeline.weights.loading import facts_from_name, load_model
from pipeline.weights.registry import KNOWN, WeightsUnavailable, find_cached, resolve

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Place `source` in `cache` exactly as huggingface_hub stores a downloaded file."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo_dir / "blobs" / ("f" * 64)
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, blob)
    except OSError:
        shutil.copyfile(source, blob)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snap = repo_dir / "snapshots" / COMMIT / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


# ----------------------------------------------------------------------------- the registry itself

def test_registry_lists_the_public_checkpoints_with_their_licences():
    assert registry.DEFAULT_NAME == "depth-anything-v2-small" and len(KNOWN) == 12
    lic = {name: c.licence for name, c in KNOWN.items()}
    assert lic["depth-anything-v2-small"] == "Apache-2.0"
    assert lic["depth-anything-v2-base"] == lic["depth-anything-v2-large"] == "CC-BY-NC-4.0"
    assert lic["depth-anything-v2-metric-indoor-small"] == lic["depth-anything-v2-metric-outdoor-small"] == "Apache-2.0"
    assert lic["depth-anything-v2-metric-outdoor-large"] == "CC-BY-NC-4.0"
    assert all(c.licence_url.startswith("https://") for c in KNOWN.values())
    assert KNOWN["depth-anything-v2-base"].non_commercial and not KNOWN["depth-anything-v2-small"].non_commercial
    small = KNOWN["depth-anything-v2-small"]
    assert (small.repo_id, small.filename) == ("depth-anything/Depth-Anything-V2-Small", "depth_anything_v2_vits.pth")
    v1 = KNOWN["depth-anything-v1-large"]
    assert (v1.repo_id, v1.filename, v1.version) == ("LiheYoung/depth_anything_vitl14", "pytorch_model.bin", "v1")
    hyp, vk = KNOWN["depth-anything-v2-metric-indoor-base"], KNOWN["depth-anything-v2-metric-outdoor-base"]
    assert (hyp.repo_id, hyp.filename, hyp.max_depth, hyp.kind) == (
        "depth-anything/Depth-Anything-V2-Metric-Hypersim-Base", "depth_anything_v2_metric_hypersim_vitb.pth",
        20.0, "metric_depth")
    assert (vk.repo_id, vk.max_depth) == ("depth-anything/Depth-Anything-V2-Metric-VKITTI-Base", 80.0)


@pytest.mark.parametrize("name", list(KNOWN))
def test_entry_agrees_with_what_its_cached_path_tells_the_loader(name):
    c = KNOWN[name]
    assert c.config == ModelConfig(c.encoder, c.version, c.metric, c.max_depth)
    assert c.kind == c.config.output_kind
    cached_path = f"/cache/models--{c.repo_id.replace('/', '--')}/snapshots/{COMMIT}/{c.filename}"
    facts = facts_from_name(cached_path)
    assert {k: facts[k] for k in ("encoder", "version", "metric")} == \
        {"encoder": c.encoder, "version": c.version, "metric": c.metric}
    if c.metric:
        assert facts["max_depth"] == c.max_depth


# ----------------------------------------------------------------------------- Hub cache, offline

def test_resolve_and_load_a_registry_name_from_the_hub_cache(offline_cache, recipe_pth, recipe_state_dict):
    assert find_cached("depth-anything-v2-small") is None
    snap = populate_hub_cache(offline_cache, "depth-anything/Depth-Anything-V2-Small",
                              "depth_anything_v2_vits.pth", recipe_pth)
    assert find_cached("depth-anything-v2-small") == snap
    assert resolve("depth-anything-v2-small") == snap
    loaded = load_model("depth-anything-v2-small")
    assert loaded.model_id == "depth-anything-v2-small" and loaded.source == "depth-anything-v2-small"
    assert loaded.config == ModelConfig("vits", "v2", False)
    sd = loaded.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in recipe_state_dict.items() if k != "pretrained.mask_token")
    with pytest.raises(CheckpointError, match="this is a v2 checkpoint; you asked for v1"):
        load_model("depth-anything-v2-small", version="v1")   # the registry is binding, unlike file names


def test_a_cached_file_is_used_without_asking_the_hub(offline_cache, recipe_pth, monkeypatch):
    """Online mode too: a cached release resolves with no network call (no start-up delay offline)."""
    import huggingface_hub

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("hf_hub_download was called for a cached file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    entry = KNOWN["depth-anything-v2-small"]
    snap = populate_hub_cache(offline_cache, entry.repo_id, entry.filename, recipe_pth)
    assert resolve("depth-anything-v2-small") == snap


def test_registry_metric_entry_sets_metric_and_max_depth(offline_cache, recipe_pth):
    populate_hub_cache(offline_cache, "depth-anything/Depth-Anything-V2-Metric-VKITTI-Small",
                       "depth_anything_v2_metric_vkitti_vits.pth", recipe_pth)
    loaded = load_model("depth-anything-v2-metric-outdoor-small")
    assert loaded.config == ModelConfig("vits", "v2", True, 80.0)
    assert loaded.model_id == "depth-anything-v2-metric-outdoor-small"
    with pytest.raises(CheckpointError, match="this is a metric depth checkpoint"):
        load_model("depth-anything-v2-metric-outdoor-small", metric=False)


def test_offline_and_not_cached_names_repo_file_and_the_local_alternative(offline_cache):
    with pytest.raises(WeightsUnavailable) as e:
        resolve("depth-anything-v2-base")
    msg = str(e.value)
    assert "depth-anything/Depth-Anything-V2-Base" in msg and "depth_anything_v2_vitb.pth" in msg
    assert "--checkpoint /path/to/depth_anything_v2_vitb.pth" in msg
    assert "huggingface.co/depth-anything/Depth-Anything-V2-Base/resolve/main/depth_anything_v2_vitb.pth" in msg
    with pytest.raises(CheckpointError, match="Depth-Anything-V2-Base"):   # same through load_model
        load_model("depth-anything-v2-base")


def test_hf_hub_offline_environment_variable_in_a_fresh_process(tmp_path):
    code = ("from pipeline.weights.registry import resolve, WeightsUnavailable\n"
            "try:\n    resolve('depth-anything-v1-small')\nexcept WeightsUnavailable as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LiheYoung/depth_anything_vits14" in out.stdout and "pytorch_model.bin" in out.stdout
    assert "--checkpoint" in out.stdout


def test_cli_list_shows_licence_and_cached_state(offline_cache, recipe_pth, capsys):
    populate_hub_cache(offline_cache, "depth-anything/Depth-Anything-V2-Small",
                       "depth_anything_v2_vits.pth", recipe_pth)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["list", "--json"])) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["depth-anything-v2-small"]["cached"] and rows["depth-anything-v2-small"]["default"]
    assert rows["depth-anything-v2-large"]["cached"] is None
    assert rows["depth-anything-v2-large"]["licence"] == "CC-BY-NC-4.0"
    assert cli.run(parser.parse_args(["list"])) == 0
    table = capsys.readouterr().out.splitlines()
    small = next(line for line in table if line.startswith("depth-anything-v2-small"))
    large = next(line for line in table if line.startswith("depth-anything-v2-large"))
    assert "Apache-2.0" in small and " yes " in small
    assert "CC-BY-NC-4.0" in large and " no " in large
