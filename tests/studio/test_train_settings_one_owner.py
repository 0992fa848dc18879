"""Training settings have one owner (issue 10): `train --help`, the train tab's form and the validated config
are all read from TrainConfig's field definitions; a new hyperparameter is one `setting(...)` line. And a run
folder's file names are spelled in one module only."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from pipeline.cli import train as train_cli
from pipeline.errors import ConfigError
from pipeline.ranges import Range
from pipeline.services.training_form import FORM_EXTRAS, form_settings
from pipeline.train.config_fields import describe, setting
from pipeline.train.train_config import SETTINGS, TrainConfig
from studio import train_tab

ROOT = Path(__file__).resolve().parents[2]


def help_text(config_cls=TrainConfig) -> str:
    p = argparse.ArgumentParser(prog="train", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=10_000,
                                                                                     max_help_position=150))
    train_cli.add_config_options(p, config_cls)
    return p.format_help()


def test_help_form_and_config_walk_the_same_definition(settings, vitt_service, tmp_path):
    from services import make_services

    from pipeline.services.training_service import TrainingService
    from pipeline.store import Store
    from studio.app import build_app
    text = help_text()
    for s in SETTINGS:                                             # --help: option, help, range and default
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(s.option))
        assert s.help[:40] in line, s.name
        if s.range is not None:
            assert s.range.describe() in line, s.name
        if s.default is not None:
            assert f"(default {s.shown_default()})" in line, s.name
    service = TrainingService(Store(settings.ensure_dirs().database), settings, vitt_service,
                              data_root=tmp_path / "root", gpus=0)
    demo = build_app(make_services(vitt_service, training=service), tabs=(train_tab,))
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for s in form_settings():                                      # the form: a widget per setting, its default
        widget = by_id["train-holdout" if s.name == "holdout" else train_tab.elem_id(s.name)]
        if s.name != "holdout":                                    # holdout is the comparison's slider
            assert widget.label.lower() == s.label.lower() and widget.info == s.help, s.name
            shown = s.shown_default() if isinstance(widget, gr.Textbox) else (s.default if s.default is not None else "")
            assert widget.value == shown, s.name
        if isinstance(widget, gr.Number) and s.range is not None:
            assert (widget.minimum, widget.maximum) == (s.range.low, s.range.high), s.name
    assert {s.form for s in SETTINGS} == {"main", "advanced", None}
    collect = next(fn for fn in demo.fns.values() if [type(b).__name__ for b in fn.outputs] == ["JSON"])
    sent = {b.elem_id for b in collect.inputs}                    # what /train_start's settings object holds
    assert sent == {f"train-{n}" for n in FORM_EXTRAS} | {
        "train-holdout" if s.name == "holdout" else train_tab.elem_id(s.name) for s in form_settings()}
    form = {s.name: s.shown_default() if s.kind in ("ratio", "pair") else s.default for s in form_settings()}
    cfg = service.train_config({**form, "name": "walk", "init": "random", "encoder": "vitt", "feature_target": None,
                                "decay": None})
    for s in form_settings():                                      # the form's defaults are the config's
        if s.name not in ("encoder", "feature_target", "decay"):
            assert getattr(cfg, s.name) == getattr(TrainConfig(db="x"), s.name), s.name


@dataclass(frozen=True)
class WithANewKnob(TrainConfig):
    new_knob: float = setting(0.3, "a new hyperparameter for the recipe", range=Range("new_knob", 0.0, 1.0))


def test_a_new_hyperparameter_is_one_line_in_the_config():
    spec = {s.name: s for s in describe(WithANewKnob)}["new_knob"]
    assert (spec.option, spec.group, spec.form, spec.kind) == ("--new-knob", "recipe", "advanced", "float")
    assert re.search(r"--new-knob NEW_KNOB\s+a new hyperparameter for the recipe; a number from 0 to 1 "
                     r"\(default 0\.3\)", help_text(WithANewKnob))
    p = argparse.ArgumentParser()
    train_cli.add_config_options(p, WithANewKnob)
    assert p.parse_args(["--new-knob", "0.7"]).new_knob == 0.7
    assert WithANewKnob.from_dict({"db": "x", "new_knob": "0.7"}).new_knob == 0.7      # a form sends text too
    with pytest.raises(ConfigError, match="new_knob must be a number from 0 to 1, got 2"):
        WithANewKnob(db="x", new_knob=2)
    widget = train_tab.setting_component(spec)                                        # and the form shows it
    assert isinstance(widget, gr.Number) and (widget.value, widget.minimum, widget.maximum) == (0.3, 0.0, 1.0)


def test_a_setting_without_help_is_refused():
    @dataclass(frozen=True)
    class Undocumented(TrainConfig):
        knob: int = 3
    with pytest.raises(TypeError, match="without setting"):
        describe(Undocumented)


RUN_FILES = ("train_config.json", "train_state.pt", "final.safetensors", "metrics.jsonl", "step-*.safetensors",
             "step-{")


def test_a_run_folders_file_names_are_spelled_in_one_module():
    owner = ROOT / "pipeline" / "train" / "run_folder.py"
    for path in [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "studio").rglob("*.py"), ROOT / "app.py"]:
        text = path.read_text()
        found = [name for name in RUN_FILES if name in text]
        assert path == owner or not found, f"{path.relative_to(ROOT)} spells {found}"
    assert all(name in owner.read_text() for name in RUN_FILES)


def test_the_train_command_spells_no_default_value():
    source = (ROOT / "pipeline" / "cli" / "train.py").read_text()
    assert not re.findall(r"default \d|default [a-z]+\)|default=[^N]", source.replace("default=None", ""))
