"""pipeline.services.depth_service: model cache, weights-missing fallback, one request end to end, bad input."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import render
from pipeline.config import ModelConfig
from pipeline.errors import ConfigError, ImageError
from pipeline.files import depth_png
from pipeline.runtime import resolve_auto
from pipeline.services.depth_models import ModelCache, ModelChoice, registry_choices
from pipeline.services.depth_service import DepthService


def read_ply_xyz_rgb(path):
    import open3d as o3d
    pcd = o3d.io.read_point_cloud(str(path))
    return np.asarray(pcd.points), np.asarray(pcd.colors)


# ---- model choices ---------------------------------------------------------------------------

def test_registry_choices_carry_licences_and_configs():
    by_key = {c.key: c for c in registry_choices()}
    small = by_key["depth-anything-v2-small"]
    assert small.licence == "Apache-2.0" and small.config == ModelConfig("vits", "v2")
    assert by_key["depth-anything-v2-large"].licence == "CC-BY-NC-4.0"
    assert by_key["depth-anything-v2-metric-outdoor-small"].config.max_depth == 80.0
    assert "depth-anything/Depth-Anything-V2-Small/depth_anything_v2_vits.pth" == small.note


def test_checkpoint_file_becomes_the_default_choice(vitt_service, vitt_checkpoint):
    assert vitt_service.default_key == "file:tiny_vitt.safetensors"
    assert vitt_service.choice(None).source == str(vitt_checkpoint)
    assert [c.key for c in vitt_service.choices()] == [vitt_service.default_key]
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        vitt_service.choice("nope")


def test_pluggable_sources_are_read_on_every_call(settings, vitt_checkpoint):
    trained = []
    service = DepthService(settings, sources=[lambda: list(trained)], default=str(vitt_checkpoint))
    assert len(service.choices()) == 1
    trained.append(ModelChoice("trained:1", "student 1", "Apache-2.0", str(vitt_checkpoint), "trained"))
    assert [c.key for c in service.choices()][-1] == "trained:1"


# ---- model cache -----------------------------------------------------------------------------

def test_a_model_loads_once_even_under_concurrent_requests(vitt_service, monkeypatch):
    import pipeline.services.depth_service as ds
    calls = []
    real = ds.load_model

    def slow_load(*a, **k):
        calls.append(a)
        time.sleep(0.2)                       # widen the race window
        return real(*a, **k)
    monkeypatch.setattr(ds, "load_model", slow_load)
    got = []
    threads = [threading.Thread(target=lambda: got.append(vitt_service.model())) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and vitt_service.cache.loads == 1
    assert all(g is got[0] for g in got)
    assert vitt_service.model() is got[0] and len(calls) == 1     # a later request: still no reload


def test_a_model_keeps_one_predictor_per_input_size_that_still_follows_its_weights(vitt_service, small_rgb):
    loaded = vitt_service.model()
    first = vitt_service.predictor(loaded)
    assert vitt_service.predictor(loaded, vitt_service.settings.input_size) is first      # made once, not per request
    other = vitt_service.predictor(loaded, 140)
    assert other is not first and other.input_size == 140 and vitt_service.predictor(loaded, 140) is other
    before = vitt_service.infer(small_rgb).array
    with torch.no_grad():
        loaded.checkpoint.model.depth_head.scratch.output_conv2[2].bias += 0.25          # weights changed in place
    after = vitt_service.infer(small_rgb).array
    assert vitt_service.predictor(loaded) is first
    assert np.abs(after - before).max() > 0.1
    from pipeline.predictor import Predictor
    fresh = Predictor(loaded.checkpoint, device="cpu", backend="torch").predict(small_rgb).array
    np.testing.assert_allclose(after, fresh, atol=1e-4 * np.abs(fresh).max())


def test_cache_evicts_least_recently_used():
    cache = ModelCache(max_entries=2)
    for key in ("a", "b", "a", "c"):
        cache.get((key,), lambda k=key: k)
    assert ("a",) in cache and ("c",) in cache and ("b",) not in cache
    assert cache.loads == 3


# ---- weights missing -------------------------------------------------------------------------

def test_missing_hub_weights_fall_back_to_untrained_with_a_clear_notice(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # the real registry name, but a tiny stand-in config so the untrained network builds fast
    choice = ModelChoice("depth-anything-v2-small", "Depth Anything V2 Small", "Apache-2.0",
                         "depth-anything-v2-small", "registry", ModelConfig("vitt"),
                         "depth-anything/Depth-Anything-V2-Small/depth_anything_v2_vits.pth")
    service = DepthService(settings, sources=[lambda: [choice]])
    assert service.notice() is None
    loaded = service.model()
    assert loaded.untrained and loaded.checkpoint.model_id.startswith("untrained")
    notice = service.notice()
    for part in ("Depth Anything V2 Small", "depth_anything_v2_vits.pth", "Depth-Anything-V2-Small",
                 "UNTRAINED", "--checkpoint FILE", "Hugging Face cache"):
        assert part in notice
    assert service.notice("depth-anything-v2-small") == notice
    headline = notice.split("\n\n")[0]                         # the banner's one line
    assert "\n" not in headline and "Depth Anything V2 Small" in headline and "UNTRAINED" in headline


def test_weights_problem_offline_is_known_without_a_download(settings, monkeypatch, tmp_path):
    """A model switch asks whether the weights are at hand: offline, one probe, no Hub call, no load."""
    import socket

    import huggingface_hub
    import huggingface_hub.constants as hc

    from pipeline.weights import hub
    calls = {"connect": 0, "download": 0}

    def unreachable(*a, **kw):
        calls["connect"] += 1
        raise OSError("Network is unreachable")

    def download(*a, **kw):
        calls["download"] += 1
        raise AssertionError("no download offline")

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    hub.forget()
    try:
        service = DepthService(settings, sources=[registry_choices])
        for key in ("depth-anything-v2-large", "depth-anything-v2-metric-outdoor-base"):
            assert service.weights_problem(key).startswith("not cached, and the Hub is offline")
        assert len(service.cache._entries) == 0 and calls == {"connect": 1, "download": 0}
    finally:
        hub.forget()


def test_unreadable_checkpoint_file_falls_back_too(settings, tmp_path, small_rgb):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    choice = ModelChoice("broken", "broken.pth (local file)", "?", str(bad), "file", ModelConfig("vitt"), str(bad))
    service = DepthService(settings, sources=[lambda: [choice]], default="broken")
    result = service.run(small_rgb, input_size=70)
    assert result.summary["untrained"] and "broken.pth" in result.summary["notice"]
    assert result.array.shape == (60, 80)


# ---- one request -----------------------------------------------------------------------------

def test_run_writes_every_output_and_they_agree(vitt_service, small_rgb):
    result = vitt_service.run(small_rgb, input_size=70, cmap="inferno")
    vitt_service.results.files(result.summary["request"])                 # + the ones made when first asked
    a = result.array                                                      # (60, 80) float32
    assert a.shape == (60, 80) and a.dtype == np.float32 and result.kind == "disparity"
    assert np.array_equal(np.load(result.files["npy"]), a)
    back = depth_png.read_depth_png(result.files["depth16"])
    assert np.abs(back - a).max() <= (a.max() - a.min()) / 65535 * 1.01 + 1e-7
    with Image.open(result.files["color"]) as colour:                     # a palette PNG of the map's colours
        assert colour.mode == "P" and np.array_equal(np.asarray(colour.convert("RGB")), render.colorize(a, "inferno"))
    assert set(result.files) == {"input", "color", "depth16", "npy", "ply"}     # the rest is built when asked
    xyz, rgb = read_ply_xyz_rgb(result.files["ply"])
    assert len(xyz) == 60 * 80 == result.summary["points"]
    assert np.allclose(np.sort(rgb.reshape(-1, 3)[:, 0]), np.sort(small_rgb[..., 0].ravel() / 255.0), atol=1 / 255)
    s = result.summary
    assert (s["min"], s["max"]) == (float(a.min()), float(a.max()))
    assert (s["width"], s["height"], s["unit"], s["device"], s["input_size"]) == (80, 60, "relative disparity", "cpu", 70)
    assert s["backend"] == resolve_auto(torch.device("cpu"))          # what ran: OpenVINO where installed
    assert s["focal_source"].startswith("60 degree") and not s["untrained"] and s["notice"] is None
    assert set(s["timings_ms"]) >= {"decode", "model_load", "inference", "color_map", "sent_files", "point_cloud",
                                     "total"}
    with Image.open(result.files["depth16"]) as im:                  # the summary says what the file records
        assert s["depth16"] == json.loads(im.info[depth_png.TEXT_KEY])
    assert np.abs(np.asarray(Image.open(result.files["input"]), np.float32) - small_rgb).mean() < 8     # JPEG q90
    assert s["request"] == result.folder.name and s["exports"] == ["ply", "exr", "glb", "normals", "gray"]
    assert s["fov_deg"]["horizontal_deg"] == pytest.approx(60.0)
    assert all(p.parent == result.folder and p.parent.parent == vitt_service.settings.temp_dir
               for p in result.files.values())


def test_the_slider_jpeg_16_bit_png_and_viewer_cloud_are_made_when_first_asked(vitt_service, small_rgb, monkeypatch):
    """run() answers once the colour PNG, the .npy and the pixels exist; the slider JPEG, the 16-bit PNG
    and the viewer's cloud (what /predict does not send) are made by the first reader, once, and the
    cloud has the points the summary announced."""
    from pipeline.services import depth_outputs
    result = vitt_service.run(small_rgb, input_size=70)
    assert all(result.files[k].exists() for k in ("color", "npy"))
    assert not any(result.files[k].exists() for k in ("depth16", "input", "ply"))
    rid = result.summary["request"]
    files, _ = vitt_service.results.exports(rid, [])
    assert {p.name for p in files} >= {result.files[k].name for k in ("input", "depth16", "npy", "color", "ply")}
    np.testing.assert_allclose(depth_png.read_depth_png(result.files["depth16"]), result.array,
                               atol=float(np.ptp(result.array)) / 65535 * 1.01 + 1e-7)
    xyz, _ = read_ply_xyz_rgb(result.files["ply"])
    assert len(xyz) == result.summary["points"] == 60 * 80
    made = {k: result.files[k].stat().st_mtime_ns for k in ("input", "depth16", "ply")}
    monkeypatch.setattr(depth_outputs.depth_png, "write_depth_png", None)           # a second build would fail
    monkeypatch.setattr(depth_outputs.pointcloud, "write_ply", None)
    assert vitt_service.results.files(rid) == vitt_service.results.files(rid)
    assert made == {k: result.files[k].stat().st_mtime_ns for k in ("input", "depth16", "ply")}


def test_a_filtered_cloud_is_written_with_the_request_and_counted_from_it(vitt_service, small_rgb):
    """A voxel filter changes the count, so that cloud is built before /predict answers."""
    result = vitt_service.run(small_rgb, input_size=70, voxel_size=0.05)
    xyz, _ = read_ply_xyz_rgb(result.files["ply"])
    assert 0 < len(xyz) == result.summary["points"] < 60 * 80
    record = vitt_service.results.open(result.summary["request"]).record
    assert record.cloud_with_request and record.viewer_points == vitt_service.settings.max_viewer_points


def test_a_file_that_cannot_be_made_later_is_a_one_line_error(vitt_service, small_rgb, monkeypatch):
    import contextlib

    from pipeline.errors import StudioError
    from pipeline.services import depth_outputs
    from pipeline.services.depth_outputs import RGB_FILE, RequestGone
    result = vitt_service.run(small_rgb, input_size=70)
    rid = result.summary["request"]

    @contextlib.contextmanager
    def full_disk(path, **_):
        raise OSError(28, "No space left on device")
        yield
    with monkeypatch.context() as m:
        m.setattr(depth_outputs, "atomic_path", full_disk)
        with pytest.raises(StudioError, match=r"cannot write array_input.jpg: No space left on device"):
            vitt_service.results.files(rid)
    assert np.array_equal(np.load(result.files["npy"]), result.array)      # nothing of the answer lost
    (result.folder / RGB_FILE).unlink()                                    # half cleaned up
    with pytest.raises(RequestGone, match="compute depth again"):
        vitt_service.results.files(rid)


def test_each_request_gets_its_own_folder(vitt_service, small_rgb):
    a = vitt_service.run(small_rgb, input_size=70)
    b = vitt_service.run(small_rgb, input_size=70)
    assert a.folder != b.folder and np.array_equal(a.array, b.array)


@pytest.mark.slow      # ~8 s (vits at 518x770 on CPU); tests/e2e checks the same numbers over HTTP
def test_recipe_weights_reproduce_the_official_numbers(settings, recipe_pth, reference):
    """The service end to end on the official-layout vits weights vs the official code's output."""
    service = DepthService(settings, sources=[], default=str(recipe_pth))
    result = service.run(reference["image_rgb"], input_size=518)
    assert np.abs(result.array - reference["depth_v2_full_res"]).max() <= 1e-3
    assert np.abs(np.load(result.files["npy"]) - reference["depth_v2_full_res"]).max() <= 1e-3


def test_focal_given_exif_or_field_of_view(vitt_service, small_rgb, tmp_path):
    from pipeline.geometry.pointcloud import focal_from_fov
    assert vitt_service.run(small_rgb, input_size=70, focal_px=123.0).summary["focal_px"] == 123.0
    s = vitt_service.run(small_rgb, input_size=70).summary
    assert s["focal_px"] == round(focal_from_fov(80, 60), 2)
    with pytest.raises(ConfigError, match="focal length"):
        vitt_service.run(small_rgb, input_size=70, focal_px=-5)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50                       # FocalLengthIn35mmFilm = 50 mm
    Image.fromarray(small_rgb).save(tmp_path / "camera.jpg", exif=exif.tobytes())
    s = vitt_service.run(str(tmp_path / "camera.jpg"), input_size=70).summary
    assert s["focal_source"] == "exif" and s["focal_px"] == round(50 / 36 * 80, 2)


def test_large_images_are_strided_for_the_viewer_cloud(settings, vitt_checkpoint):
    service = DepthService(settings.with_overrides(max_viewer_points=1000), sources=[], default=str(vitt_checkpoint))
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    result = service.run(rgb, input_size=70)
    assert result.summary["point_stride"] == 3 and result.summary["points"] == 20 * 27


def test_unknown_colour_map_is_refused_by_name(vitt_service, small_rgb):
    with pytest.raises(ConfigError, match="rainbowz"):
        vitt_service.run(small_rgb, cmap="rainbowz")


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["not an image", "truncated jpeg", "1x1", "decompression bomb"])
def test_bad_inputs_raise_image_errors_naming_the_file(vitt_service, bad_inputs, name, small_rgb):
    path = bad_inputs[name]
    with pytest.raises(ImageError) as e:
        vitt_service.run(str(path), input_size=70)
    assert path.name in str(e.value) or "1x1" in str(e.value)
    assert vitt_service.run(small_rgb, input_size=70).array.shape == (60, 80)     # still serving


@pytest.mark.parametrize("name", ["16-bit grayscale png", "cmyk jpeg"])
def test_unusual_formats_work(vitt_service, odd_but_valid_inputs, name):
    result = vitt_service.run(str(odd_but_valid_inputs[name]), input_size=70)
    assert result.array.shape == (60, 80) and np.isfinite(result.array).all()


def test_no_image_says_what_to_do(vitt_service):
    with pytest.raises(ImageError, match="upload"):
        vitt_service.run(None)


def test_old_request_folders_are_cleaned_up(vitt_service, small_rgb):
    import os
    old = vitt_service.settings.temp_dir / "20000101-000000-deadbeef"
    old.mkdir()
    (old / "x.npy").write_bytes(b"0")
    (old / "colour-2").mkdir()                              # a re-coloured picture's folder goes too
    (old / "colour-2" / "x_depth_color.png").write_bytes(b"png")
    os.utime(old, (0, 0))
    vitt_service._last_cleanup = 0.0
    vitt_service.run(small_rgb, input_size=70)
    assert not old.exists()


def test_a_flat_prediction_still_gives_every_output_but_the_cloud(vitt_service, small_rgb):
    """Untrained weights often predict all zeros: the maps and files still come, the cloud says why not."""
    from pipeline.predictor import Prediction

    def zeros(rgb, key, size):
        return Prediction(np.zeros(rgb.shape[:2], np.float32), "disparity", "x", "cpu", 0.0)
    result = vitt_service.run(small_rgb, input_size=70, infer=zeros)
    vitt_service.results.files(result.summary["request"])
    assert "ply" not in result.files and result.summary["points"] == 0
    assert result.summary["cloud_note"].startswith("No point cloud: ") and "disparity" in result.summary["cloud_note"]
    assert np.array_equal(np.load(result.files["npy"]), np.zeros((60, 80), np.float32))
    assert np.array_equal(depth_png.read_depth_png(result.files["depth16"]), np.zeros((60, 80), np.float32))


def test_students_registered_in_the_store_become_choices(settings, vitt_checkpoint, small_rgb):
    from pipeline.services.depth_models import store_choices
    from pipeline.store import Store
    source = store_choices(settings.database)
    assert source() == [] and not settings.database.exists()          # listing never creates the db
    store = Store(settings.ensure_dirs().database)
    ckpt = store.register_checkpoint(vitt_checkpoint, "student-1", ModelConfig("vitt").to_dict())
    service = DepthService(settings, sources=[source], default=str(vitt_checkpoint))
    choice = service.choice(f"trained:{ckpt.id}")
    assert (choice.kind, choice.source, choice.config) == ("trained", str(vitt_checkpoint.resolve()), ModelConfig("vitt"))
    assert "student-1" in choice.title
    result = service.run(small_rgb, model=choice.key, input_size=70)
    assert result.summary["model"] == choice.key and not result.summary["untrained"]


# ---- hardening (issue 12) --------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("input_size", 14 * 1000, "input size must be"), ("input_size", "abc", "input size must be"),
    ("focal_px", 1e12, "focal length"), ("focal_px", "wide", "focal length"), ("voxel_size", 1e-12, "voxel size"),
    ("voxel_size", float("nan"), "voxel size"),
])
def test_every_number_of_a_request_is_range_checked_by_the_service(vitt_service, small_rgb, field, value, words):
    with pytest.raises(ConfigError, match=words) as e:
        vitt_service.run(small_rgb, **{field: value})
    assert "\n" not in str(e.value)


def test_a_narrow_strip_is_refused_naming_the_file_not_a_server_path(vitt_service, tmp_path):
    folder = tmp_path / "gradio" / "0123456789abcdef"
    folder.mkdir(parents=True)
    strip = folder / "strip.png"
    Image.fromarray(np.full((8, 2000, 3), 90, np.uint8)).save(strip)
    with pytest.raises(ImageError) as e:
        vitt_service.run(str(strip))
    message = str(e.value)
    assert message.startswith("strip.png: ") and "2000×8" in message and str(folder) not in message


def test_the_summary_names_the_upload_not_its_server_path(vitt_service, small_rgb, tmp_path):
    folder = tmp_path / "gradio" / "fedcba9876543210"
    folder.mkdir(parents=True)
    Image.fromarray(small_rgb).save(folder / "holiday.png")
    result = vitt_service.run(str(folder / "holiday.png"), input_size=70)
    assert result.summary["image"] == "holiday.png"
    assert str(tmp_path) not in repr(result.summary)
