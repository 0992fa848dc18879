"""Issue 10.7: what the studio's wiring may and may not do.

- studio/ never runs SQL, reaches into the label store, imports torch or does numpy image maths
  (those live in pipeline/: the services and pipeline/geometry/picture_marks.py);
- every handler that reaches a service is under one of studio/errors.py's two decorators, so a
  StudioError leaves it as a gr.Error (or as its read-out panel's text), never as itself.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from pipeline.errors import ConfigError, StudioError
from studio.curate_gallery import GalleryHandlers
from studio.curate_image import ImageHandlers
from studio.curate_intake import IntakeHandlers
from studio.curate_tab import CurateHandlers
from studio.depth_batch import BatchHandlers
from studio.depth_handlers import DepthHandlers
from studio.depth_video import VideoHandlers
from studio.train_handlers import TrainHandlers

STUDIO = Path(__file__).resolve().parents[2] / "studio"
DECORATORS = {"user_errors", "said_in_panel"}
FORBIDDEN_IMPORTS = {"sqlite3", "torch", "numpy", "pipeline.store"}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b.*\b(FROM|VALUES|SET|WHERE)\b", re.S)
HANDLER_CLASSES = (DepthHandlers, BatchHandlers, VideoHandlers, ImageHandlers, GalleryHandlers, IntakeHandlers,
                   CurateHandlers, TrainHandlers)


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text()) for p in sorted(STUDIO.glob("*.py"))}


def _imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [node.module or ""]
    return []


def test_the_checks_see_what_they_look_for():
    """The scanners below find a forbidden import and a store reach in code written to have them."""
    assert SQL.search("SELECT id FROM images") and not SQL.search("Select an image from the gallery")
    tree = ast.parse("import sqlite3\nfrom pipeline.store import Store\nx = self.curation.store.count()\n")
    assert [n for node in ast.walk(tree) for n in _imported(node)] == ["sqlite3", "pipeline.store"]
    assert [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"] == ["store"]
    assert _offenders(ast.parse("class XHandlers:\n    def a(self):\n        return self._b()\n"
                                "    def _b(self):\n        return self.service.x()\n")) == ["XHandlers.a"]


def test_studio_runs_no_sql_never_reaches_the_store_and_does_no_image_maths():
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            for mod in _imported(node):
                if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN_IMPORTS):
                    found.append(f"{name}:{node.lineno} imports {mod}")
            if isinstance(node, ast.Attribute) and node.attr == "store":
                found.append(f"{name}:{node.lineno} reaches .store")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{name}:{node.lineno} holds SQL")
    assert found == []


def _decorated(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Call) and ast.unparse(d.func).split(".")[-1] in DECORATORS for d in fn.decorator_list)


def _offenders(tree: ast.Module) -> list[str]:
    """Public methods of *Handlers classes that reach outside the object (a service, a sub-handler)
    directly or through an undecorated method of their own, without one of the two decorators."""
    out = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Handlers")):
        methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"}
        direct, calls = {}, {}
        for name, fn in methods.items():
            attrs = {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id == "self"}
            direct[name] = bool(attrs - set(methods))
            calls[name] = attrs & set(methods)
        reaches = dict(direct)
        changed = True
        while changed:
            changed = False
            for name in methods:
                if not reaches[name] and any(reaches[c] and not _decorated(methods[c]) for c in calls[name]):
                    reaches[name] = changed = True
        out += [f"{cls.name}.{n}" for n, fn in methods.items()
                if reaches[n] and not n.startswith("_") and not _decorated(fn)]
    return out


def test_every_handler_that_reaches_a_service_is_under_the_user_error_decorator():
    found = [f"{name}: {o}" for name, tree in modules().items() for o in _offenders(tree)]
    assert found == []
    in_files = {c.name for tree in modules().values() for c in tree.body
                if isinstance(c, ast.ClassDef) and c.name.endswith("Handlers")}
    assert in_files == {c.__name__ for c in HANDLER_CLASSES}      # the dynamic test below covers every group


class Refusing:
    """A stand-in service: any attribute is another one, and calling one raises a StudioError whose
    message is HTML (it must reach the page escaped)."""

    def __init__(self, path: str = "service"):
        self._path = path

    def __getattr__(self, name: str) -> Refusing:
        return Refusing(f"{self._path}.{name}")

    def __call__(self, *args, **kwargs):
        raise ConfigError(f"<b>{self._path}</b> refused")


ARGUMENTS = {                 # by parameter name: values that get a handler past its own checks
    "sel": {"image_id": 1, "head_id": 1, "scale": 1.0}, "view": {"request": "r1", "files": {"input": "i.png", "color": "c.png"}, "summary": {}},
    "request": None, "progress": lambda *a, **k: None, "evt": SimpleNamespace(index=(1, 2)),
    "page_ids": [1, 2], "ticked": [1], "clicks": [[1, 2], [3, 4]], "refs": [], "cursors": {},
    "settings": {"steps": 1}, "job_id": 1, "image_id": 1, "pair_id": 1, "delta": 1, "status": "accepted",
    "to": "accepted", "statuses": ["accepted"], "formats": ["glb"], "files": ["a.png"], "pending": [],
    "selection": None, "editor": None, "mode": "wand_depth", "kind": "distance", "metres": 1.0,
    "seen": None, "tags": "a", "tags_text": "a", "folder": "x", "dry_run": True, "remove": False,
    "points": [[1, 2]], "ax": 1, "ay": 2, "closer": "A", "tool": "smooth", "operation": "add",
}


BY_METHOD = {                 # where a name means something else
    "DepthHandlers.export": {"request": "r1"}, "DepthHandlers.measure": {"request": "r1"},
    "ImageHandlers.select": {"evt": SimpleNamespace(index=0)}, "CurateHandlers.poll_and_refresh": {"job_id": 1},
}


def _call(handlers, name: str):
    fn = getattr(handlers, name)
    params = inspect.signature(fn).parameters
    given = {**ARGUMENTS, **BY_METHOD.get(f"{type(handlers).__name__}.{name}", {})}
    kwargs = {p: given.get(p, "1") for p, spec in params.items()
              if spec.kind not in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD)}
    return fn(**kwargs)


def _public(cls) -> list[str]:
    return [n for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")]


@pytest.mark.parametrize("cls", HANDLER_CLASSES, ids=lambda c: c.__name__)
def test_a_refusing_service_reaches_the_page_as_gr_error_never_as_itself(cls, monkeypatch):
    """Every public handler over a service that refuses everything: a gr.Error with the escaped line,
    or a return value (read-outs say it in their panel), never the StudioError; most must reach the
    service (else this test would test nothing)."""
    args = {"DepthHandlers": (Refusing(), Refusing("infer")), "BatchHandlers": (Refusing(), Refusing("infer")),
            "VideoHandlers": (Refusing(), Refusing("runner")), "TrainHandlers": (Refusing(), Refusing("compare")),
            "IntakeHandlers": (Refusing(), Refusing("depth")), "CurateHandlers": (Refusing(), Refusing("depth"))}
    monkeypatch.setattr("studio.depth_batch.run_batch", Refusing("run_batch"))   # a pipeline function, not a method
    handlers = cls(*args.get(cls.__name__, (Refusing(),)))
    refused, returned = [], []
    for name in _public(cls):
        try:
            out = _call(handlers, name)
        except gr.Error as e:
            assert "<b>" not in e.message and "&lt;b&gt;" in e.message and "refused" in e.message, (name, e.message)
            refused.append(name)
        except StudioError as e:
            pytest.fail(f"{cls.__name__}.{name} let {type(e).__name__} out: {e}")
        else:
            if "refused" in str(out):
                assert "<b>" not in str(out), (name, out)              # said in the panel, escaped
            returned.append(name)
    assert refused, f"{cls.__name__}: no handler reached the service"
    assert len(refused) >= len(returned) or cls in (DepthHandlers,), (refused, returned)
