"""How a TrainConfig field describes itself: one definition for the config, the CLI and the form.

Every field of `TrainConfig` is declared with `setting(default, help, ...)`, a dataclasses field
whose metadata holds what each consumer needs:

    help     one sentence: `train --help` shows it (with the default) and the train tab's form too
    range    a pipeline.ranges.Range: TrainConfig checks the value against it (one-line ConfigError),
             `--help` and the form show the bounds, the form's number box gets them as min / max
    choices  the allowed strings (CLI choices, a dropdown in the form)
    option   the CLI flag when it is not --<field-name> (e.g. --lr for lr_encoder)
    group    the --help section and the form's place ("data", "model", "metric", "schedule", ...)
    form     "main" (the form's first rows), "advanced" (the advanced settings, the default), or
             None: the one starting the run decides it (paths, device; the studio fills them in)
    label    the form's label (default: the field name in words)

`describe(cls)` -> [Setting], in field order: what pipeline/cli/train.py and the train tab walk.
Adding a hyperparameter is one `setting(...)` line in TrainConfig (and its use in the recipe).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..ranges import Range

GROUPS = ("data", "model", "metric", "schedule", "recipe", "loss", "run")
FORM_PLACES = ("main", "advanced", None)
KINDS = ("bool", "int", "float", "str", "ratio", "pair")


def setting(default, help: str, *, range: Range | None = None, choices: tuple[str, ...] | None = None,
            option: str | None = None, group: str = "recipe", form: str | None = "advanced",
            label: str | None = None):
    """A TrainConfig field with its help, range / choices, CLI option, group and form place."""
    if group not in GROUPS or form not in FORM_PLACES:
        raise ValueError(f"group {group!r} / form {form!r}: use one of {GROUPS} / {FORM_PLACES}")
    return field(default=default, metadata={"help": help, "range": range, "choices": choices, "option": option,
                                            "group": group, "form": form, "label": label})


@dataclass(frozen=True)
class Setting:
    """One TrainConfig field as the CLI and the form see it."""

    name: str
    kind: str                         # KINDS
    default: Any
    help: str
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    option: str = ""                  # --flag
    group: str = "recipe"
    form: str | None = "advanced"
    label: str = ""

    def shown_default(self) -> str:
        if self.default is None:
            return ""
        if self.kind == "ratio":
            return f"{self.default[0]}:{self.default[1]}"
        if self.kind == "pair":
            return ",".join(f"{v:g}" for v in self.default)
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def parse(self, value):
        """A value as a person or a client sends it (text for ratios and pairs) -> what TrainConfig takes.
        Numbers stay as sent: TrainConfig checks them against `range` (which reads numeric text)."""
        if self.kind == "ratio" and isinstance(value, str):
            return parse_ratio(value)
        if self.kind == "pair" and isinstance(value, str):
            return parse_pair(value)
        if self.kind in ("ratio", "pair") and isinstance(value, (list, tuple)):
            return tuple(value)
        return value


def _kind(annotation: str, default) -> str:
    if "tuple[int" in annotation:
        return "ratio"
    if "tuple[float" in annotation:
        return "pair"
    for kind in ("bool", "int", "float"):
        if annotation.split("|")[0].strip() == kind:
            return kind
    return "str"


@functools.cache
def describe(cls) -> tuple[Setting, ...]:
    """The settings of a config dataclass (TrainConfig or a subclass), in field order (cached per class)."""
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "help" not in m:
            raise TypeError(f"{cls.__name__}.{f.name} is declared without setting(...): give it help text")
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(Setting(f.name, _kind(annotation, f.default), f.default, m["help"], m["range"], m["choices"],
                           m["option"] or "--" + f.name.replace("_", "-"), m["group"], m["form"],
                           m["label"] or f.name.replace("_", " ")))
    return tuple(out)


def parse_ratio(text: str) -> tuple[int, int]:
    """'1:2' -> (1, 2). Raises ConfigError quoting the text."""
    try:
        a, b = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise ConfigError(f"ratio must look like 1:2 (labelled:pseudo-labelled), got {text!r}") from None
    return a, b


def parse_pair(text: str) -> tuple[float, float]:
    """'0.1,2.0' -> (0.1, 2.0). Raises ConfigError quoting the text."""
    try:
        lo, hi = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ConfigError(f"expected two numbers like 0.1,2.0, got {text!r}") from None
    return lo, hi
