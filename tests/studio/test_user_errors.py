"""Issue 12 in the studio's handlers: one decorator for user errors, ranges, escaping, no server paths."""
from __future__ import annotations

import ast
import io
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.services.curation_service import CurationService
from pipeline.store import Store
from studio.curate_image import VIEW_FIELDS
from studio.curate_tab import CurateHandlers
from studio.curate_text import import_markdown
from studio.errors import user_errors
from studio.text import html_text, md

STUDIO = Path(__file__).resolve().parents[2] / "studio"
EVIL = "<img src=x onerror=alert(1)>\n**bold**`tick`.jpg"


def png(seed: int, h: int = 12, w: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def curation(tmp_path, settings):
    store = Store(tmp_path / "c.db")
    rec, _ = store.add_image(png(0), EVIL, width=16, height=12)
    store.add_prediction(rec.id, "teacher", "disparity", np.ones((12, 16), np.float32), confidence=0.5)
    return CurationService(store, settings, import_root=tmp_path / "root")


@pytest.fixture
def h(curation):
    return CurateHandlers(curation)


def test_the_decorator_turns_user_errors_into_one_escaped_line():
    @user_errors("Cannot do it")
    def refuse_it(what):
        raise ConfigError(f"bad value {what}\nsecond line")

    with pytest.raises(gr.Error) as e:
        refuse_it("<b>x</b>")
    assert e.value.message == "bad value &lt;b&gt;x&lt;/b&gt; second line" and e.value.title == "Cannot do it"

    @user_errors("Cannot do it")
    def bug():
        raise KeyError("a bug stays a bug")
    with pytest.raises(KeyError):
        bug()


def test_no_handler_catches_studio_errors_by_hand():
    """The ~16 copies of `except StudioError: raise gr.Error(...)` / toast blocks are one decorator now."""
    offenders = []
    for path in STUDIO.glob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and "StudioError" in ast.unparse(node.type or ast.Name("")):
                body = ast.unparse(node)
                if "gr.Error" in body or "Warning" in body:
                    offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("gr.Warning", "gr.Error"):
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
    assert offenders == []


@pytest.mark.parametrize("call, words", [
    (lambda h: h.image.show("abc"), "image id must be a whole number"),
    (lambda h: h.image.show("1; DROP TABLE images"), "image id must be a whole number"),
    (lambda h: h.image.show(2 ** 80), "image id must be a whole number"),
    (lambda h: h.gallery.gallery("all", "name", "two"), "page must be a whole number"),
    (lambda h: h.gallery.gallery("all", "name", 1, None, None, None, "high"), "confidence bound must be"),
    (lambda h: h.image.delete_pair({"image_id": 1, "head_id": 1}, "x"), "point pair number must be"),
    (lambda h: h.image.select_at({"image_id": 1, "head_id": 1}, 2, 3, "wand_depth", "add", 7, "slic", 100,
                                 None, []), "selection tolerance"),
    (lambda h: h.image.calibrate({"image_id": 1, "head_id": 1}, [{"image_id": 1, "type": "depth", "point": [1, 1],
                                                                 "metres": "far"}], None, False), "known length"),
    (lambda h: h.intake.poll_job("seven"), "job id must be"),
    (lambda h: h.intake.cancel_job(-3), "job id must be"),
    (lambda h: h.intake.cancel_job(99), "job 99 does not exist"),
    (lambda h: h.intake.import_folder("sub\x00dir"), "control character"),
])
def test_bad_values_are_one_line_errors(h, call, words):
    with pytest.raises(gr.Error) as e:
        call(h)
    assert words in e.value.message and "\n" not in e.value.message and "Traceback" not in e.value.message


@pytest.mark.parametrize("sigma", [2e7, 1e9, float("nan"), "huge", 0])
def test_a_huge_sigma_is_refused_before_any_work(h, curation, sigma):
    sel = h.image.show(1)[VIEW_FIELDS.index("sel")]
    layer = np.zeros((12, 16, 4), np.uint8)
    layer[2:6, 3:8] = (255, 0, 255, 150)
    with pytest.raises(gr.Error, match="smoothing sigma \\(pixels\\) must be a number from 0.1 to 100"):
        h.image.apply_tool(sel, "smooth", {"layers": [layer]}, sigma, None, "add", None)
    assert len(curation.store.history(1).revisions) == 1


def test_names_are_escaped_in_the_header_and_the_import_report(h, curation, tmp_path):
    header = h.image.show(1)[VIEW_FIELDS.index("header")]
    assert "<img" not in header and "&lt;img src=x onerror=alert\\(1\\)&gt;" in header
    assert "\\*\\*bold\\*\\*\\`tick\\`" in header and header.count("\n") == 0      # the header is one line
    (tmp_path / "root").mkdir(exist_ok=True)
    report = import_markdown(curation.import_uploads([(EVIL, png(0))]))
    assert "<img" not in report and "&lt;img" in report and report.count("\n") == 1


def test_md_and_html_text():
    assert md("a_b*c [x](y) <i>\nz") == "a\\_b\\*c \\[x\\]\\(y\\) &lt;i&gt; z"
    assert html_text("<script>\n&") == "&lt;script&gt; &amp;"


def test_job_endpoints_take_the_job_id(h, curation):
    import os
    store = curation.store
    job = store.create_job("pseudo_label", ["pseudo-label"], total=3)
    store.claim_job(job.id, os.getpid())
    store.finish_job(job.id, "failed", error="<b>boom</b>\nline two")
    job_id, html, _ = h.intake.poll_job(str(job.id))                   # the API may send the id as text
    assert job_id == job.id and "&lt;b&gt;boom&lt;/b&gt; line two" in html and "<b>boom" not in html


def test_import_messages_name_the_upload_not_the_server_path(h, tmp_path):
    folder = tmp_path / "gradio" / "abcdef0123456789"
    folder.mkdir(parents=True)
    (folder / "truncated.jpg").write_bytes(png(3)[:40])
    (tmp_path / "root").mkdir(exist_ok=True)
    text = h.intake.import_files([str(folder / "truncated.jpg"), str(folder / "vanished.png")])
    assert "truncated.jpg" in text and "vanished.png" in text and str(tmp_path) not in text

