"""The network-input bound: every image becomes a network input of bounded size, or a clear refusal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import PATCH_SIZE
from pipeline.errors import ConfigError, ImageError
from pipeline.preprocess import (
    MAX_ASPECT,
    MAX_INPUT_SIZE,
    max_aspect_ratio,
    max_network_pixels,
    network_size,
    prepare,
    resize_input,
)


@pytest.mark.parametrize("hw", [(500, 741), (480, 640), (518, 518), (100, 400), (400, 100), (9, 30)])
def test_ordinary_images_keep_the_official_short_side_rule(hw):
    """Up to MAX_ASPECT:1 nothing changes: the short side becomes the input size (official 'lower_bound')."""
    h, w = hw
    nh, nw = network_size(h, w, 518)
    assert min(nh, nw) == 518 and nh % PATCH_SIZE == 0 and nw % PATCH_SIZE == 0
    assert abs(nw / nh - w / h) < 0.05 * w / h


@pytest.mark.parametrize("input_size", [196, 518, 1036])
@pytest.mark.parametrize("hw", [(100, 2000), (2000, 100), (64, 4000), (300, 1201), (1, 100)])
def test_wide_images_are_capped_on_the_long_side(hw, input_size):
    """Past MAX_ASPECT:1 the long side gets MAX_ASPECT x input (official 'upper_bound' into that box)."""
    h, w = hw
    if max(h, w) / min(h, w) > max_aspect_ratio(input_size):
        pytest.skip("refused at this input size (tested below)")
    nh, nw = network_size(h, w, input_size)
    assert nh * nw <= max_network_pixels(input_size)
    assert max(nh, nw) == MAX_ASPECT * input_size
    assert min(nh, nw) >= PATCH_SIZE and nh % PATCH_SIZE == 0 and nw % PATCH_SIZE == 0
    ratio, got = max(h, w) / min(h, w), max(nh, nw) / min(nh, nw)
    assert got == pytest.approx(ratio, rel=0.5 * PATCH_SIZE / min(nh, nw) + 1e-9)   # aspect kept to the rounding


def test_the_bound_is_continuous_at_the_aspect_limit():
    assert network_size(518, 4 * 518, 518) == (518, 4 * 518)
    h, w = network_size(518, 4 * 518 + 1, 518)
    assert (h, w) == (518, 4 * 518)


@pytest.mark.parametrize("hw", [(8, 2000), (10, 20000), (20000, 10)])
def test_strips_thinner_than_one_patch_are_refused_with_the_reason(hw):
    h, w = hw
    with pytest.raises(ImageError) as e:
        network_size(h, w, 518)
    message = str(e.value)
    assert f"{w}×{h}" in message and f"{max_aspect_ratio(518)}:1" in message and "\n" not in message


def test_the_refusal_names_the_image_when_given():
    with pytest.raises(ImageError, match=r"^strip\.png: "):
        network_size(8, 2000, 518, name="strip.png")


@pytest.mark.parametrize("bad", [0, 13, 15, MAX_INPUT_SIZE + PATCH_SIZE, 14 * 10_000])
def test_input_sizes_outside_the_supported_range_are_config_errors(bad):
    with pytest.raises(ConfigError, match="input size"):
        network_size(100, 100, bad)


def test_prepare_of_a_wide_strip_is_bounded():
    rgb = np.zeros((50, 5000, 3), np.uint8)                              # 100:1, allowed at 518
    x = prepare(rgb, 518)
    assert x.shape[-2:] == (14, 2072) and x.numel() <= 3 * max_network_pixels(518)


def test_resize_input_refuses_outputs_no_input_size_allows():
    """The safety net for callers with a rule of their own (training's short-side resize)."""
    x = torch.zeros(1, 3, 8, 2000)
    with pytest.raises(ImageError, match="at most"):
        resize_input(x, (518, 129_500))
    assert resize_input(x, (14, 2072)).shape[-2:] == (14, 2072)


# ----------------------------------------------------------------------------- where images enter
@pytest.fixture(scope="module")
def vitt_file(tmp_path_factory):
    from pipeline.config import ModelConfig
    from pipeline.weights.loading import save_checkpoint, untrained_model
    torch.manual_seed(0)
    return save_checkpoint(untrained_model(ModelConfig(encoder="vitt")).model,
                           tmp_path_factory.mktemp("vitt") / "vitt.safetensors", model_id="tiny-vitt")


def test_the_predictor_runs_a_wide_image_at_the_bounded_size(vitt_file, monkeypatch):
    from pipeline import preprocess
    from pipeline.predictor import Predictor
    seen = []
    real = preprocess.resize_input
    monkeypatch.setattr(preprocess, "resize_input", lambda x, size: seen.append(tuple(size)) or real(x, size))
    rgb = np.random.default_rng(0).integers(0, 256, (20, 400, 3), dtype=np.uint8)   # 20:1
    pred = Predictor.from_checkpoint(vitt_file, device="cpu", input_size=140).predict(rgb)
    assert pred.array.shape == (20, 400) and np.isfinite(pred.array).all()
    assert seen == [(28, 560)]                       # not the short-side rule's 140 x 2800


def _cli_peak_rss_kb(args: list[str]) -> tuple[int, str, int]:
    """Run `python -m pipeline ARGS` in a fresh process: (exit status, stderr, its peak RSS in kB)."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import resource, sys\nfrom pipeline import cli\nrc = cli.main(sys.argv[1:])\n"
            "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    lines = done.stderr.strip().splitlines()
    peak = int(lines[-1].split()[-1])
    return done.returncode, "\n".join(lines[:-1]), peak


@pytest.mark.slow
def test_cli_skips_a_20000x10_strip_in_one_line_with_bounded_memory(vitt_file, tmp_path):
    """The strip is reported and skipped like any unreadable input (the other images are written, the
    exit status says one failed), with no traceback and no memory spent on it."""
    from PIL import Image
    Image.fromarray(np.full((10, 20000, 3), 120, np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(tmp_path / "small.png")
    common = ["--checkpoint", str(vitt_file), "--device", "cpu", "--out"]
    rc_small, err_small, peak_small = _cli_peak_rss_kb(["predict", str(tmp_path / "small.png"), *common,
                                                        str(tmp_path / "o1")])
    rc, err, peak = _cli_peak_rss_kb(["predict", str(tmp_path / "strip.png"), str(tmp_path / "small.png"), *common,
                                      str(tmp_path / "o2")])
    assert rc_small == 0, err_small
    assert rc == 1 and "Traceback" not in err, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and "strip.png" in skipped[0] and "20000×10" in skipped[0] and "148:1" in skipped[0], err
    assert "wrote 1 of 2 input(s)" in err and (tmp_path / "o2" / "small.npy").is_file()
    assert peak < peak_small + 300_000, (peak, peak_small)      # the short-side rule asked for 6.4 GB more


def test_pseudo_labelling_skips_a_strip_with_the_reason_and_labels_the_rest(vitt_file, tmp_path):
    """The bound reaches every way an image enters: a strip in the store is one skipped image."""
    import io

    from PIL import Image

    from pipeline.intake.pseudo_label import run_pseudo_label
    from pipeline.predictor import Predictor
    from pipeline.store import Store

    def png(rgb):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        return buf.getvalue()
    store = Store(tmp_path / "s.db")
    strip, _ = store.add_image(png(np.full((8, 2000, 3), 50, np.uint8)), "strip.png", width=2000, height=8)
    ok, _ = store.add_image(png(np.full((28, 36, 3), 90, np.uint8)), "ok.png", width=36, height=28)
    summary = run_pseudo_label(store, Predictor.from_checkpoint(vitt_file, device="cpu", input_size=42))
    assert summary.done == 1 and [i for i, _ in summary.failed] == [strip.id]
    assert "2000×8" in summary.failed[0][1] and store.head(ok.id) is not None and store.head(strip.id) is None
