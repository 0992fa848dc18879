"""OpenVINO's CPU plugin points the compiling thread's alternate signal stack at a buffer it owns and
unmaps when the plugin is unloaded (the last Core and compiled model gone) from another thread. A Python signal handler
(installed with SA_ONSTACK, e.g. torch's DataLoader SIGCHLD handler) then crashes the whole process the
next time a child exits: the kernel cannot write the signal frame (SIGSEGV, si_code SI_KERNEL). This is
what killed CI mid-suite (exit 139). `openvino_rt.core()` keeps one Core for the process, so the plugin
and its buffers stay; the test runs the sequence in a child process and expects it to live."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import ctypes, gc, signal, subprocess, sys
import torch
from pipeline.runtime import openvino_rt

class stack_t(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

def alt_stack_mapped() -> bool:
    s = stack_t()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s))
    if not s.ss_sp:
        return True
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= s.ss_sp < hi:
            return True
    return False

onnx = sys.argv[1]
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3))
torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), onnx, dynamo=False, input_names=["x"],
                  dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
import openvino as ov
xml = sys.argv[2]
ov.save_model(ov.convert_model(onnx), xml)
import threading
held = {}
for _ in range(2):                                 # compile and run here, drop in another thread (as a
    held["m"] = openvino_rt.compile_model(xml, 1)  # garbage collection in a server thread does)
    held["m"].create_infer_request().infer({0: torch.rand(1, 3, 20, 20).numpy()})
    dropper = threading.Thread(target=lambda: (held.clear(), gc.collect()))
    dropper.start()
    dropper.join()
print("mapped", alt_stack_mapped())
signal.signal(signal.SIGCHLD, lambda *a: None)     # a Python handler, as torch's DataLoader installs
for _ in range(3):
    subprocess.run(["true"], check=True)           # each exit sends SIGCHLD to this process
print("alive")
"""


def test_dropping_every_compiled_model_leaves_the_signal_stack_usable(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "m.onnx"), str(tmp_path / "m.xml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert "mapped True" in out.stdout and "alive" in out.stdout
