"""The studio over real HTTP: gradio_client and the README's curl route; /predict values, bad input, upload cap, no weights."""
from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.files.depth_png import read_depth_png
from pipeline.render import DEFAULT_CMAP, colorize

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def motorcycle_png(motorcycle_rgb, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "motorcycle.png"
    Image.fromarray(motorcycle_rgb).save(path)
    return path


def test_predict_over_http_returns_the_official_numbers(studio, client_for, motorcycle_png, reference):
    from gradio_client import handle_file
    client = client_for(studio)
    colour, npy, summary = client.predict(handle_file(str(motorcycle_png)), input_size=518, api_name="/predict")
    expected = reference["depth_v2_full_res"]                                   # (500, 741)
    depth = np.load(npy)
    assert np.abs(depth - expected).max() <= 1e-3
    with Image.open(colour) as picture:                  # a palette PNG: the colour map's pixels of the values sent
        assert picture.mode == "P"
        assert np.array_equal(np.asarray(picture.convert("RGB")), colorize(depth, DEFAULT_CMAP))
    assert summary["point_stride"] == 2 and summary["points"] == 250 * 371          # the light viewer cloud
    assert summary["unit"] == "relative disparity"
    assert summary["min"] == pytest.approx(float(expected.min()), abs=1e-3)
    assert summary["untrained"] is False and summary["model_id"] == "depth-anything-v2-small"
    # the request's other files, and the full-resolution ones built when asked
    files, zipped = client.predict(summary["request"], ["ply", "exr"], api_name="/export")
    by_name = {Path(f).name: f for f in files}
    span = float(depth.max() - depth.min())
    assert np.abs(read_depth_png(by_name["motorcycle_depth16.png"]) - depth).max() <= span / 65535 * 1.01
    before = np.asarray(Image.open(by_name["motorcycle_input.jpg"]))
    assert np.abs(before.astype(int) - reference["image_rgb"]).mean() < 3           # the JPEG of the input
    assert open(by_name["motorcycle_points.ply"], "rb").read(3) == b"ply"          # the viewer's light cloud
    full = read_ply_points(by_name["motorcycle_points_full.ply"])
    assert len(full) == 500 * 741
    from pipeline.files.exports import read_exr
    assert np.array_equal(read_exr(by_name["motorcycle_depth.exr"]).array, depth)
    with zipfile.ZipFile(zipped) as z:
        assert sorted(z.namelist()) == sorted(by_name)
    m = client.predict(summary["request"], 10, 20, 700, 480, api_name="/measure")
    assert m["refusal"].startswith("This is a relative model") and m["points"][0]["x"] == 10


def test_the_readme_curl_example_gives_the_same_answer(studio, motorcycle_png, reference, tmp_path):
    """README "Without a client library": its bash block, run as written (curl), then the files it names."""
    import re
    import subprocess

    import httpx
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    script = readme.split("Without a client library (any language)")[1].split("```bash\n")[1].split("```")[0]
    script = script.replace("URL=http://127.0.0.1:7860", f"URL={studio.url.rstrip('/')}")
    (tmp_path / "photo.jpg").write_bytes(motorcycle_png.read_bytes())        # a PNG under the README's name
    done = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    event, data = re.search(r"event: (\w+)\ndata: (.*)", done.stdout).groups()
    assert event == "complete", data
    colour, npy, summary = json.loads(data)[:3]
    assert Path(colour["path"]).parent.name == Path(npy["path"]).parent.name == summary["request"]   # where they lie
    depth = np.load(io.BytesIO(httpx.get(npy["url"]).content))
    assert np.abs(depth - reference["depth_v2_full_res"]).max() <= 1e-3         # the official numbers
    with Image.open(io.BytesIO(httpx.get(colour["url"]).content)) as picture:
        assert np.array_equal(np.asarray(picture.convert("RGB")), colorize(depth, DEFAULT_CMAP))
    assert summary["model_id"] == "depth-anything-v2-small" and summary["unit"] == "relative disparity"


def read_ply_points(path) -> np.ndarray:
    import open3d as o3d
    return np.asarray(o3d.io.read_point_cloud(str(path)).points)


def test_model_info_and_inspect_endpoints(studio, client_for, motorcycle_png):
    from gradio_client import handle_file
    client = client_for(studio)
    focal, text = client.predict(handle_file(str(motorcycle_png)), api_name="/inspect")
    assert focal == 0 and "741×500 pixels" in text
    assert "licence" in client.predict(api_name="/model_info")


@pytest.mark.parametrize("name", ["not an image", "truncated jpeg", "1x1", "decompression bomb"])
def test_bad_input_gives_a_readable_error_and_the_server_keeps_serving(studio, client_for, bad_inputs, name,
                                                                      small_rgb, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    client = client_for(studio)
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(bad_inputs[name])), input_size=140, api_name="/predict")
    message = str(e.value)
    assert bad_inputs[name].name in message or "1x1" in message, message
    assert "Traceback" not in message
    good = tmp_path / "good.png"
    Image.fromarray(small_rgb).save(good)
    *_, summary = client.predict(handle_file(str(good)), input_size=140, api_name="/predict")
    assert (summary["width"], summary["height"]) == (80, 60)


@pytest.mark.parametrize("name", ["16-bit grayscale png", "cmyk jpeg"])
def test_unusual_formats_work_over_http(studio, client_for, odd_but_valid_inputs, name):
    from gradio_client import handle_file
    *_, summary = client_for(studio).predict(handle_file(str(odd_but_valid_inputs[name])), input_size=140,
                                             api_name="/predict")
    assert (summary["width"], summary["height"]) == (80, 60) and np.isfinite(summary["max"])


def test_uploads_over_the_cap_are_refused(studio, client_for, tmp_path):
    import httpx
    from gradio_client import handle_file
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (6 * 1024 * 1024))              # the studio fixture caps uploads at 5 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size of 5242880 bytes"):
        client_for(studio).predict(handle_file(str(big)), api_name="/predict")    # the client reads the cap
    with big.open("rb") as f:                                                     # and the server enforces it
        r = httpx.post(studio.url + "gradio_api/upload", files={"files": ("huge.png", f, "image/png")}, timeout=30)
    assert r.status_code == 413, r.text


def test_only_page_outputs_are_served(studio):
    studio.data_dir.joinpath("runs").mkdir(parents=True, exist_ok=True)
    studio.data_dir.joinpath("runs", "final.safetensors").write_bytes(b"weights")
    db = studio.data_dir.resolve() / "studio.db"
    db.touch()
    for secret in ("/gradio_api/file=/etc/passwd", "/gradio_api/file=app.py", f"/gradio_api/file={db}",
                   f"/gradio_api/file={studio.data_dir.resolve() / 'runs' / 'final.safetensors'}"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(studio.url.rstrip("/") + secret, timeout=5)
        assert e.value.code in (403, 404)


def test_without_weights_the_page_says_so_and_predict_still_works(studio_no_weights, client_for, small_rgb, tmp_path):
    """Network unreachable: found once at start, said in the banner, and no Hub retries anywhere."""
    from gradio_client import handle_file
    config = json.loads(urllib.request.urlopen(studio_no_weights.url + "config", timeout=10).read())
    banner = next(c for c in config["components"] if c["props"].get("elem_id") == "studio-banner")
    text = banner["props"]["value"]
    assert banner["props"]["visible"] is True
    for part in ("Depth Anything V2 Small", "depth_anything_v2_vits.pth", "--checkpoint", "UNTRAINED", "offline"):
        assert part in text
    assert "WARNING: Weights for Depth Anything V2 Small" in studio_no_weights.log()
    client = client_for(studio_no_weights)
    good = tmp_path / "good.png"
    Image.fromarray(small_rgb).save(good)
    *_, summary = client.predict(handle_file(str(good)), input_size=140, api_name="/predict")
    assert summary["untrained"] is True and "depth_anything_v2_vits.pth" in summary["notice"]
    assert summary["model_id"].startswith("untrained")
    # a model switch says at once that those weights are missing too (no download attempted, no load)
    info = client.predict("depth-anything-v2-metric-indoor-large", api_name="/model_info")
    assert "Weights missing (not cached, and the Hub is offline (" in info and "cannot be reached" in info
    assert "Retrying in" not in studio_no_weights.log()                  # huggingface_hub never got to retry


def test_batch_over_http(studio, client_for, small_rgb, tmp_path):
    from gradio_client import handle_file
    paths = [tmp_path / "one.png", tmp_path / "two.png"]
    Image.fromarray(small_rgb).save(paths[0])
    Image.fromarray(np.ascontiguousarray(small_rgb[::-1])).save(paths[1])
    gallery, zipped, report = client_for(studio).predict([handle_file(str(p)) for p in paths], None, 140, "viridis",
                                                         api_name="/predict_batch")
    assert [g["caption"].split(":")[0] for g in gallery] == ["one.png", "two.png"]
    with zipfile.ZipFile(zipped) as z:
        assert len(z.namelist()) == 6 and "one_depth.npy" in z.namelist()
    assert "**2 image(s)**" in report
