"""OpenVINO: one compiled model with dynamic N, H, W against one static model per input size.

Run through `python benchmarks/bench_model.py --shapes`. For each size of a sequence that a
studio sees (a new size, another, back to the first...), it times the first call at that size
(for static models: reshape + compile + infer) and the steady state (median of the next calls),
interleaving the two approaches call by call; CPU time of this process is reported beside wall
time because it is the figure other processes' load disturbs least.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from pipeline.runtime import openvino_rt
from pipeline.runtime.registry import cache_entry

SIZES = [(518, 770), (518, 518), (364, 518), (518, 686), (518, 770), (518, 518)]


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def compare_shapes(model, rounds: int, threads: int) -> int:
    entry, metadata = cache_entry(model, model.config)
    openvino_rt.build(model, torch.device("cpu"), entry=entry, metadata=metadata)      # ensures the IR exists
    xml = openvino_rt.ir_folder(entry) / "model.xml"
    dynamic = openvino_rt.compile_model(xml, threads).create_infer_request()
    static: dict[tuple, object] = {}

    def static_request(hw):
        if hw not in static:
            m = openvino_rt.core().read_model(str(xml))
            m.reshape([1, 3, *hw])
            static[hw] = openvino_rt.compile_model(m, threads).create_infer_request()
        return static[hw]

    print(f"# OpenVINO {openvino_rt.release()}, vits, {threads} threads; first call and steady state "
          f"(median of {rounds}) per size, seconds wall / CPU")
    print("| size | dynamic first | static first (reshape+compile+infer) | dynamic steady | static steady "
          "| static/dynamic steady (per-call median) | max abs diff static vs dynamic |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    seen = set()
    for hw in SIZES:
        x = np.random.default_rng(0).standard_normal((1, 3, *hw)).astype(np.float32)
        run_dynamic = lambda x=x: dynamic.infer({0: x})                        # noqa: E731
        run_static = lambda x=x, hw=hw: static_request(hw).infer({0: x})       # noqa: E731
        d_first, s_first = _timed(run_dynamic), _timed(run_static)
        d, s = [], []
        for _ in range(rounds):
            d.append(_timed(run_dynamic))
            s.append(_timed(run_static))
        ratio = statistics.median(a[1] / b[1] for a, b in zip(s, d, strict=True))
        # a speed is only worth comparing at the same numbers: the reshaped static IR has been wrong at
        # non-square sizes (3.0 off at 518x770), so every row says how far it is from the dynamic model
        diff = float(np.abs(static_request(hw).infer({0: x})[0] - dynamic.infer({0: x})[0]).max())
        again = " (again)" if hw in seen else ""
        seen.add(hw)
        print(f"| {hw[0]}x{hw[1]}{again} | {d_first[0]:.2f} / {d_first[1]:.2f} | {s_first[0]:.2f} / {s_first[1]:.2f} "
              f"| {statistics.median(a[0] for a in d):.3f} / {statistics.median(a[1] for a in d):.3f} "
              f"| {statistics.median(a[0] for a in s):.3f} / {statistics.median(a[1] for a in s):.3f} | {ratio:.3f} "
              f"| {diff:.1e} |")
    return 0
