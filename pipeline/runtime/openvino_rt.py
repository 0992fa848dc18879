"""The OpenVINO backend (CPU): `DepthAnything.forward` converted to OpenVINO IR and compiled.

The IR comes from OpenVINO's PyTorch frontend (`ov.convert_model(network, example_input=...)`),
not from the ONNX file: that keeps attention as one `ScaledDotProductAttention` op (ONNX opset
18 has none, so the ONNX graph spells it as MatMul/Softmax/MatMul), which OpenVINO runs with its
fused attention kernel: 5-10% faster per forward at the same numbers (benchmarks/README.md).
The graph is the same `forward` either way, with dynamic N, H, W (traced at a small batch-2,
non-square example, as the ONNX export is) and the position embedding resampled in-graph.

Exact settings: `INFERENCE_PRECISION_HINT=f32`. Without it OpenVINO picks bf16 on CPUs with
AMX / AVX512-BF16 (this Xeon has both) and the output drifts by ~1% of its range. The IR is
converted once per OpenVINO release into the cache entry (`openvino-pt-<version>/model.xml`) and
compiled with dynamic N, H, W: a new image size costs no rebuild. An input shape seen a second time
also gets a model compiled for that one shape, in the background while that call runs, used from the
third call on (the same sequence of calls always runs the same models, so runs reproduce): OpenVINO
runs static shapes 18-39% cheaper per call at the same numbers (benchmarks/README.md, "One dynamic
model or one model per image size"). Each holds its own packed weights and buffers (~4x the
weights), so only `static_slots(weights)` of them are kept, least recently used out first: 2 for
vits, 1 for vitb, none for vitl and vitg. Threads: `torch.get_num_threads()`, so one knob
(`OMP_NUM_THREADS` / `torch.set_num_threads`) sets every backend.
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import cache
from .base import Runner
from .onnx_export import EXAMPLE_SHAPE, INPUT_NAME, OUTPUT_NAME, cpu_float_copy

log = logging.getLogger(__name__)
STATIC_BUDGET_BYTES = 2e9       # memory the static per-shape models may take beside the dynamic one
STATIC_COST = 4.0               # a compiled static model's memory / the weights' (vits 518x770: 400 MB for 99 MB)


def config(threads: int) -> dict:
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads)}


def convert_network(network: torch.nn.Module, xml_path: Path, *, fp16: bool = False,
                    rt_info: dict | None = None) -> Path:
    """A DepthAnything network -> OpenVINO IR (xml + bin) with dynamic N, H, W, input `pixel_values`
    and output `depth` as in the ONNX file. fp16: weights stored as float16 (computed in f32 on CPU)."""
    import openvino as ov
    _no_conversion_telemetry()
    net = cpu_float_copy(network)
    example = torch.randn(*EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # tracer notices, not problems
        model = ov.convert_model(net, example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])])
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    for key, value in (rt_info or {}).items():
        model.set_rt_info(str(value), ["depth_anything", key])
    ov.save_model(model, str(xml_path), compress_to_fp16=fp16)
    return xml_path


def _no_conversion_telemetry() -> None:
    """OpenVINO's converter sends usage telemetry unless a user opted out: it forks a process that
    inherits every open file descriptor and, offline, waits on DNS for minutes. A child holding the
    pipes of another subprocess keeps that one from ever seeing EOF (it hung a test run's teardown:
    Playwright waiting for its driver). This studio sends nothing from its users' machines: the
    converter gets OpenVINO's own no-op stand-in (what it uses when openvino-telemetry is missing)."""
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils
    except ImportError:                                   # a release without them: nothing to switch off
        return
    for module in (convert_impl, telemetry_utils):       # each holds its own `tm`
        module.tm = telemetry_stub


_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """The process's one `ov.Core`, never released. OpenVINO's CPU plugin points the compiling thread's
    alternate signal stack at a buffer it unmaps when the plugin unloads (the last Core and compiled
    model gone); unloaded from another thread, it leaves that thread's stack dangling, and the next
    Python signal handler to run there kills the process (SIGSEGV, SI_KERNEL: what ended CI runs with
    exit 139; tests/test_openvino_signals.py). One Core kept for the process keeps the plugin loaded.
    A second Core is also a known crash of its own (ultralytics/ultralytics#25864)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov
            _CORE = ov.Core()
        return _CORE


def compile_model(model, threads: int):
    """An IR file (path) or an `ov.Model` (e.g. one reshaped to a static size), compiled with `config`."""
    return core().compile_model(str(model) if isinstance(model, (str, Path)) else model, "CPU", config(threads))


def release() -> str:
    """The installed OpenVINO release, e.g. "2026.4.1" (get_version() without its build suffix)."""
    import openvino as ov
    return ov.get_version().split("-")[0]


def ir_folder(entry: Path) -> Path:
    """Where a cache entry keeps the IR this OpenVINO release converted. "-pt": converted from the
    network by the PyTorch frontend; entries made before hold openvino-<version>/, converted from the
    ONNX file (a different, slower graph), which must not be found."""
    return Path(entry) / f"openvino-pt-{release()}"


def static_slots(weight_bytes: int) -> int:
    """How many static per-shape models fit in STATIC_BUDGET_BYTES beside the dynamic one (at most 2)."""
    return int(min(2, STATIC_BUDGET_BYTES // (STATIC_COST * max(int(weight_bytes), 1))))


_COMPILER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openvino-static")   # one at a time


class OpenVINORunner(Runner):
    """The dynamic model answers every shape; a shape seen twice gets its own static model, compiled
    on a background thread while the 2nd call runs, used from the 3rd call on (a failed compile logs
    once and leaves that shape on the dynamic model). The two agree to float rounding (~1e-7 relative;
    tests hold them to 1e-5 of the range), not to the bit. `settle()` waits for compiles under way (benchmarks)."""

    name = "openvino"

    def __init__(self, xml_path: Path, threads: int, static_slots: int = 0):
        self.xml_path, self.threads, self.slots = Path(xml_path), int(threads), int(static_slots)
        self.compiled = compile_model(xml_path, threads)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()                      # one forward at a time (requests are not thread-safe)
        self.state = threading.Lock()                     # guards the bookkeeping below
        self.static: OrderedDict[tuple, object] = OrderedDict()   # shape -> infer request, most recent last
        self.seen: dict[tuple, int] = {}                  # calls per shape without a static model
        self.failed: set[tuple] = set()
        self.pending: dict[tuple, Future] = {}
        self.detail = f"OpenVINO {release()} CPU f32, {threads} threads"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())      # (B, 3, H, W)
        request = self._request_for(arr.shape)
        with self.lock:
            out = request.infer({0: arr}, share_inputs=True)[0]                      # (B, H, W), a copy
        return torch.from_numpy(out)

    def _request_for(self, shape: tuple):
        """Which model runs this call: the same answer for the same sequence of calls, whatever the
        timing (calls 1-2 of a shape: dynamic; the 2nd starts the static compile; from the 3rd on: the
        static model, waiting for its compile if need be), so a run is reproducible to the bit."""
        with self.state:
            if shape in self.static:
                self.static.move_to_end(shape)
                return self.static[shape]
            if self.slots == 0 or shape in self.failed:
                return self.request
            calls = self.seen[shape] = self.seen.get(shape, 0) + 1
            if calls == 2:
                self.pending[shape] = _COMPILER.submit(self._compile_static, shape)
            future = self.pending.get(shape) if calls >= 3 else None
        if future is None:
            return self.request
        future.result()                                   # never raises: failures are recorded
        return self._request_for(shape)

    def _compile_static(self, shape: tuple) -> None:
        try:
            model = core().read_model(str(self.xml_path))
            model.reshape({0: list(shape)})
            request = compile_model(model, self.threads).create_infer_request()
        except Exception as e:  # noqa: BLE001 - the dynamic model still answers this shape
            log.warning("OpenVINO could not compile a static model for %s (%s: %s); the dynamic model "
                        "keeps answering that shape", shape, type(e).__name__, e)
            with self.state:
                self.failed.add(shape)
                self.pending.pop(shape, None)
            return
        with self.state:
            self.static[shape] = request
            while len(self.static) > self.slots:
                evicted, _ = self.static.popitem(last=False)
                self.seen.pop(evicted, None)              # back to the dynamic model: counted afresh
            self.pending.pop(shape, None)

    def settle(self, timeout: float | None = None) -> None:
        """Wait until the static models being compiled are in use (or failed)."""
        with self.state:
            futures = list(self.pending.values())
        for future in futures:
            future.result(timeout)


def build(network: torch.nn.Module, device: torch.device, *, entry: Path, metadata: dict, **_) -> OpenVINORunner:
    folder = cache.build_once(ir_folder(entry),
                              lambda tmp: convert_network(network, tmp / "model.xml", rt_info=metadata))
    weight_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
    return OpenVINORunner(folder / "model.xml", torch.get_num_threads(), static_slots(weight_bytes))
