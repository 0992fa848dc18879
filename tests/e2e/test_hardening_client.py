"""Issue 12 over real HTTP with gradio_client: refusals are errors an API client sees, with the page's
message; bounded inputs; escaped names; no server paths; job ids as arguments; the login back-off."""
from __future__ import annotations

import io
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

H, W = 24, 32


def png(seed: int, h: int = H, w: int = W) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, app_runner, vitt_checkpoint):
    """app.py (tiny vitt) on a store holding one pseudo-labelled image."""
    from pipeline.store import Store
    work = tmp_path_factory.mktemp("hardened")
    db = work / "labels.db"
    store = Store(db)
    rec, _ = store.add_image(png(0), "scene.png", width=W, height=H)
    store.add_prediction(rec.id, "teacher", "disparity", np.ones((H, W), np.float32), confidence=0.4)
    app = app_runner.start(work, ["--checkpoint", str(vitt_checkpoint), "--db", str(db)])
    yield app, db, rec.id
    app_runner.stop(app)


def app_error(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as e:
        client.predict(*args, api_name=api_name)
    message = str(e.value)
    assert "\n" not in message.strip() and "Traceback" not in message and "upstream" not in message, message
    return message


def test_refused_edits_fail_for_the_api_client_with_the_pages_message(hardened, client_for):
    from pipeline.store import ANY_HEAD, Store
    app, db, image_id = hardened
    client = client_for(app)
    assert "is not in the store" in app_error(client, 999, api_name="/curate_open")
    assert "image id must be a whole number" in app_error(client, "abc", api_name="/curate_open")
    client.predict(image_id, api_name="/curate_open")                     # the session now shows revision 1
    store = Store(db)
    store.save_revision(image_id, np.full((H, W), 2, np.float32), expected_head=ANY_HEAD, tool="smooth",
                        author="bob")                                    # someone else saves meanwhile
    message = app_error(client, "ignore_mask", None, 2.0, None, api_name="/curate_apply")
    assert "changed since you opened it" in message and "bob" in message
    assert [r.tool for r in store.history(image_id).revisions] == ["pseudo_label", "smooth"]
    client.predict(image_id, api_name="/curate_open")
    assert "100" in app_error(client, "smooth", None, 2e7, None, api_name="/curate_apply")   # huge sigma


def test_job_endpoints_take_the_job_id(hardened, client_for):
    app, _, _ = hardened
    client = client_for(app)
    params = {e: [p["parameter_name"] for p in client.view_api(return_format="dict", print_info=False)
                  ["named_endpoints"][e]["parameters"]] for e in ("/curate_cancel", "/curate_resume", "/curate_job")}
    assert all(len(names) == 1 for names in params.values()), params
    assert "job 4242 does not exist" in app_error(client, 4242, api_name="/curate_cancel")
    assert "job id must be" in app_error(client, "first", api_name="/curate_resume")


def test_bad_values_are_one_line_errors(hardened, client_for):
    app, _, _ = hardened
    client = client_for(app)
    assert "control character" in app_error(client, "sub\x00dir", api_name="/curate_import_folder")
    assert "page must be a whole number" in app_error(client, "all", "name", "two", api_name="/curate_gallery")


def test_the_narrow_strip_is_refused_and_the_server_keeps_serving(hardened, client_for, tmp_path):
    """The 48 KB 2000x8 PNG that held the only inference slot for 11 minutes and took 4.5 GB."""
    from gradio_client import handle_file
    app, _, _ = hardened
    client = client_for(app)
    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((8, 2000, 3), 128, np.uint8)).save(strip)
    message = app_error(client, handle_file(str(strip)), api_name="/predict")
    assert message.startswith("strip.png: ") and "2000×8" in message and "148:1" in message
    assert "gradio" not in message and str(app.data_dir) not in message            # no server path
    good = tmp_path / "good.png"
    good.write_bytes(png(1))
    *_, summary = client.predict(handle_file(str(good)), input_size=140, api_name="/predict")
    assert (summary["width"], summary["height"], summary["image"]) == (W, H, "good.png")
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="input size must be"):
        client.predict(handle_file(str(good)), input_size="abc", api_name="/predict")


def test_names_are_escaped_and_messages_name_the_upload(hardened, client_for, tmp_path):
    from gradio_client import handle_file

    from pipeline.store import Store
    app, db, _ = hardened
    client = client_for(app)
    broken = tmp_path / "truncated.png"
    broken.write_bytes(png(8)[:60])
    report = client.predict([handle_file(str(broken))], api_name="/curate_import")
    assert "truncated.png" in report and "gradio" not in report and str(tmp_path) not in report
    # Gradio strips < > from upload names; a server folder keeps them
    folder = app.data_dir / "import" / "evil"
    folder.mkdir(parents=True)
    name = "<img src=x onerror=alert(1)>.png"
    (folder / name).write_bytes(png(9))
    (folder / ("bad " + name)).write_bytes(png(10)[:50])
    report = client.predict("evil", api_name="/curate_import_folder")
    assert "<img" not in report and "&lt;img src=x onerror=alert\\(1\\)&gt;.png" in report
    image_id = next(r.id for r in Store(db).list_images(limit=50).items if r.name == name)
    header = client.predict(image_id, api_name="/curate_open")[0]                  # (the State output is not sent)
    assert "<img" not in header and "&lt;img" in header


@pytest.fixture(scope="module")
def locked_studio(tmp_path_factory, app_runner, vitt_checkpoint):
    work = tmp_path_factory.mktemp("auth")
    app = app_runner.start(work, ["--checkpoint", str(vitt_checkpoint), "--auth", "ann:s3cret",
                                  "--login-attempts", "3"])
    yield app
    app_runner.stop(app)


def _login(app, user: str, password: str) -> int:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(app.url + "login", data=body), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_failed_logins_back_off(locked_studio):
    assert _login(locked_studio, "ann", "s3cret") == 200
    assert [_login(locked_studio, "ann", f"guess{i}") for i in range(6)] == [400] * 6
    assert _login(locked_studio, "ann", "s3cret") == 400              # the right password waits too
