"""Exported model files for use outside this project, each verified before it is reported done.

`export_model_file(loaded, out, fmt)` writes an ONNX file or an OpenVINO IR of a loaded
checkpoint, with its metadata (what the network is, its input rules, licence, source
checksum), then runs the written file in its runtime on real-size inputs and compares it with
the PyTorch model; a file that disagrees is deleted and ExportError raised. Nothing is moved
to `out` until it has passed.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import publish
from ..errors import StudioError
from ..preprocess import imagenet_normalize, prepare, resize_input, to_tensor
from ..weights import registry as checkpoint_registry
from . import onnx_export, openvino_rt

FORMATS = ("onnx", "openvino")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
F32_TOL = 5e-5      # max |file - PyTorch| as a share of the output range (measured 1e-6 to 8e-6)
FP16_TOL = 1e-2     # the bar for half precision: within 1% of the range


class ExportError(StudioError):
    """An export that could not be written or did not reproduce the PyTorch model."""


@dataclass
class Check:
    shape: tuple[int, ...]
    max_abs: float
    span: float

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.span, 1e-12)


def verification_inputs() -> list[torch.Tensor]:
    """Real-size inputs: the motorcycle image at 518x770 (batch 1), and at 364x518 with its mirror (batch 2)."""
    from ..files.sample_data import motorcycle_sample
    rgb = motorcycle_sample()[0]                                             # (500, 741, 3)
    first = prepare(rgb)                                                     # (1, 3, 518, 770)
    small = imagenet_normalize(resize_input(to_tensor(rgb), (364, 518)))              # (1, 3, 364, 518)
    return [first, torch.cat([small, small.flip(-1)])]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def source_facts(source: str) -> dict[str, str]:
    """Licence, checksum and name of the checkpoint a file is exported from."""
    path = Path(source).expanduser()
    known = None
    if not path.is_file() and source in checkpoint_registry.KNOWN:
        known, path = checkpoint_registry.KNOWN[source], checkpoint_registry.resolve(source)
    known = known or checkpoint_registry.by_filename(path.name)
    licence = (f"{known.licence} ({known.licence_url})" if known else
               "not known to this project: the licence of the source checkpoint applies")
    return {"source_checkpoint": known.name if known else path.name, "source_sha256": file_sha256(path),
            "licence": licence}


def run_file(path: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Run an exported file on x in its own runtime (CPU, float32 input)."""
    arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    if fmt == "openvino":
        return openvino_rt.compile_model(path, torch.get_num_threads())(arr)[0]
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: arr})[0]


def verify(path: Path, fmt: str, model: torch.nn.Module, tol: float) -> list[Check]:
    """Compare the file with the PyTorch model on verification_inputs(); ExportError beyond tol."""
    checks = []
    for x in verification_inputs():
        with torch.inference_mode():
            want = model(x).numpy()
        try:
            got = run_file(path, fmt, x)
        except Exception as e:  # noqa: BLE001 - whatever the runtime says, the file is unusable
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"{fmt} could not run the exported file on input {tuple(x.shape)} ({first[:300]}); "
                              f"nothing was written") from e
        if got.shape != want.shape:
            raise ExportError(f"{path.name} returned shape {got.shape} for input {tuple(x.shape)}, expected {want.shape}")
        check = Check(tuple(x.shape), float(np.abs(got - want).max()), float(want.max() - want.min()))
        if not np.isfinite(got).all() or check.relative > tol:
            raise ExportError(f"{path.name} does not reproduce the PyTorch model on input {tuple(x.shape)}: max "
                              f"|difference| {check.max_abs:.3g} = {100 * check.relative:.4f}% of the output range "
                              f"(allowed {100 * tol:g}%); the file was not written")
        checks.append(check)
    return checks


def export_model_file(loaded, out: str | Path, fmt: str, *, fp16: bool = False,
                      exporter: str = "torchscript") -> list[Check]:
    """Write `loaded` (a LoadedCheckpoint) to `out` as fmt ("onnx" | "openvino"), verified."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out.suffix.lower() != SUFFIX[fmt]:
        raise ExportError(f"--out for --format {fmt} must end in {SUFFIX[fmt]}, got {out.name}"
                          + (" (the weights go beside it, in .bin)" if fmt == "openvino" else ""))
    model = onnx_export.cpu_float_copy(loaded.model)
    meta = onnx_export.model_metadata(loaded.config, model_id=loaded.model_id, **source_facts(loaded.source),
                                      precision="float16 weights" if fp16 else "float32",
                                      exporter="openvino.convert_model" if fmt == "openvino" else exporter)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        if fmt == "openvino":                # the same conversion the openvino backend runs
            made = openvino_rt.convert_network(model, tmp / out.name, fp16=fp16, rt_info=meta)
        else:
            made = onnx_export.export_onnx(model, tmp / "model.onnx", exporter=exporter, metadata=meta)
        if fmt == "onnx" and fp16:
            onnx_export.convert_fp16(made, tmp / "model16.onnx")
            made = tmp / "model16.onnx"
        checks = verify(made, fmt, model, FP16_TOL if fp16 else F32_TOL)
        _move_into_place(made, out)
    return checks


def _move_into_place(made: Path, out: Path) -> None:
    """The file and its companions (.bin for OpenVINO, .data for large ONNX weights), renamed to out."""
    companions = {".bin": out.with_suffix(".bin")} if out.suffix == ".xml" else {}
    for suffix, target in companions.items():
        publish(made.with_suffix(suffix), target)
    data = made.parent / f"{made.name}.data"
    stale = out.parent / f"{out.name}.data"
    if data.exists():
        _rewrite_data_location(made, out.name + ".data")
        shutil.move(data, stale)
    elif stale.exists():
        stale.unlink()
    publish(made, out)


def _rewrite_data_location(onnx_path: Path, location: str) -> None:
    """Point an ONNX file's external tensors at `location` (the name its .data file will have)."""
    import onnx
    proto = onnx.load(str(onnx_path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(onnx_path))
