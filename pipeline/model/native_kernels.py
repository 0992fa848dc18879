"""The native CPU kernels of the exact inference path (native/kernels.c), built on first use.

`load()` compiles native/kernels.c with the system C compiler (`$CC`, else cc / gcc / clang)
into a cache folder keyed by the source's hash, loads it with ctypes and returns a `Kernels`
object, or None when they cannot be used here: not an x86-64 CPU with AVX2 and FMA, no
compiler, a failed build, or `DA_STUDIO_NATIVE=0`. Callers then run the PyTorch ops instead;
the results agree to float32 rounding either way (tests/test_native_kernels.py).

Why hand-written kernels: on a 2-core AVX2 machine PyTorch's fused CPU attention runs at ~70%
of the FMA peak, its linear layers and the DPT head's convolutions pay separate passes (bias
copy, GELU, ReLU, residual adds, upsampled maps) and fresh allocations; these kernels fuse them
and run at ~85-100% of the matmul rate (figures: benchmarks/README.md). Threads come from the OpenMP runtime
PyTorch has loaded (libgomp.so.1), so both share one pool.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "kernels.c"
CFLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
ABI_VERSION = 5
NR = 16                                     # column panel width of the micro-kernel
EPILOGUES = {"store": 0, "gelu": 1, "accumulate": 2}

_lock = threading.Lock()             # building and loading (may take seconds)
_pool_lock = threading.Lock()        # the scratch-set pool (never held for long)
_loaded: dict[str, Kernels | None] = {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "depth-anything-studio" / "native"


def cpu_supported() -> bool:
    """x86-64 with AVX2 and FMA (what the kernels are written for)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return "avx2" in flags and "fma" in flags


def _compiler() -> str | None:
    for name in filter(None, [os.environ.get("CC"), "cc", "gcc", "clang"]):
        if shutil.which(name):
            return name
    return None


def build(cache: Path | None = None) -> Path:
    """Compile kernels.c (once per source hash); returns the shared library's path.

    Raises RuntimeError with the compiler's message when there is no compiler or the build fails.
    """
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    cache = cache or cache_dir()
    lib = cache / f"kernels-{digest}.so"
    if lib.exists():
        return lib
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)          # same folder: the rename is atomic
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed to build {SOURCE.name}: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _check(where: str, packed: torch.Tensor | None, n_out: int, *tensors: torch.Tensor | None) -> None:
    """The kernels read raw memory: refuse anything but float32 CPU tensors, and a packed weight
    with fewer output columns than asked for (that would read past its end)."""
    for t in (packed, *tensors):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise ValueError(f"{where}: expected float32 CPU tensors, got {t.dtype} on {t.device}")
    if packed is not None and (packed.dim() != 3 or packed.shape[2] != NR or packed.shape[0] * NR < n_out
                               or not packed.is_contiguous()):
        raise ValueError(f"{where}: the packed weight does not hold {n_out} output channels")
    if packed is not None and packed.data_ptr() % 32:
        raise ValueError(f"{where}: the packed weight must be 32-byte aligned (use pack_weight / pack_conv)")


def _check_out(where: str, out: torch.Tensor | None, *inputs: torch.Tensor) -> None:
    """An output that shares memory with an input would be read after it was overwritten."""
    if out is None:
        return
    base = out.untyped_storage().data_ptr()
    if any(t is not None and t.untyped_storage().data_ptr() == base for t in inputs):
        raise ValueError(f"{where}: out must not share memory with an input")


class Kernels:
    """ctypes bindings of native/kernels.c; every method takes and returns float32 CPU tensors."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        lib, P, L, Int, F = self.lib, ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
        lib.da_abi_version.restype = Int
        if lib.da_abi_version() != ABI_VERSION:
            raise RuntimeError(f"{path.name} has ABI {lib.da_abi_version()}, expected {ABI_VERSION}")
        lib.da_linear.argtypes = [P, L, L, L, P, L, P, P, L, Int, Int]
        lib.da_linear.restype = Int
        lib.da_attention_workspace.argtypes = [L, L, L, L]
        lib.da_attention_workspace.restype = L
        lib.da_attention.argtypes = [P, P, P, P, P, L, L, L, L, L, L, L, L, L, L, F, Int]
        lib.da_attention.restype = Int
        lib.da_conv3x3.argtypes = [P, L, L, L, L, P, L, P, Int, P, P, P, Int]
        lib.da_conv3x3.restype = Int
        lib.da_upsample_conv3x3.argtypes = [P, L, L, L, L, L, L, P, L, P, Int, P, F, P, Int]
        lib.da_upsample_conv3x3.restype = Int

    @staticmethod
    def pack_weight(weight: torch.Tensor) -> torch.Tensor:
        """(N, K) linear weight -> W^T in column panels: (ceil(N/16), K, 16), zero past N."""
        n, k = weight.shape
        padded = weight.new_zeros((n + NR - 1) // NR * NR, k)
        padded[:n] = weight
        return padded.view(-1, NR, k).transpose(1, 2).contiguous()

    def linear(self, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor, n_out: int,
               epilogue: str = "store", out: torch.Tensor | None = None) -> torch.Tensor:
        """epilogue(x @ W.T + bias) for x (M, K) with unit column stride; 'accumulate' adds into `out`."""
        m, k = x.shape
        _check("linear", packed, n_out, x, bias, out)
        _check_out("linear", out, x, bias)
        if x.stride(1) != 1 or packed.shape[1] != k or bias.numel() != n_out or not bias.is_contiguous():
            raise ValueError("linear: x must be (M, K) with unit column stride matching the packed weight")
        if out is None:
            if epilogue == "accumulate":
                raise ValueError("linear: 'accumulate' needs the tensor to add into")
            out = torch.empty(m, n_out, dtype=x.dtype)
        elif out.shape != (m, n_out) or out.stride(1) != 1:
            raise ValueError("linear: out must be (M, N) with unit column stride")
        rc = self.lib.da_linear(x.data_ptr(), m, k, x.stride(0), packed.data_ptr(), n_out, bias.data_ptr(),
                                out.data_ptr(), out.stride(0), EPILOGUES[epilogue], torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"da_linear failed ({rc})")
        return out

    def attention(self, qkv: torch.Tensor, heads: int, scale: float | None = None) -> torch.Tensor:
        """Multi-head attention out of a fused projection: qkv (B, N, 3*C) -> (B, N, C).

        Row layout of qkv as timm and the official DINOv2 write it: [q | k | v], each heads x d.
        """
        b, n, c3 = qkv.shape
        _check("attention", None, 0, qkv)
        c = c3 // 3
        d = c // heads
        if qkv.stride(2) != 1 or d % NR or c3 != 3 * c or c != heads * d:
            raise ValueError("attention: qkv must be (B, N, 3*heads*d) with unit last stride and d % 16 == 0")
        out = torch.empty(b, n, c, dtype=qkv.dtype)
        work = _work_buffer(self.lib.da_attention_workspace(b, n, heads, d))
        base, esize = qkv.data_ptr(), qkv.element_size()
        rc = self.lib.da_attention(base, base + c * esize, base + 2 * c * esize, out.data_ptr(), work.data_ptr(),
                                   b, n, heads, d, qkv.stride(1), qkv.stride(0), d, c, n * c, d,
                                   d ** -0.5 if scale is None else scale, torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"da_attention failed ({rc})")
        return out


    @staticmethod
    def pack_conv(weight: torch.Tensor) -> torch.Tensor:
        """(Cout, Cin, 3, 3) weight -> (ceil(Cout/16), 9*Cin, 16): taps row-major, then input channels."""
        cout, cin = weight.shape[:2]
        return Kernels.pack_weight(weight.permute(0, 2, 3, 1).reshape(cout, 9 * cin))

    def conv3x3(self, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, cout: int, *,
                relu: bool = False, residuals: tuple[torch.Tensor, ...] = (),
                out: torch.Tensor | None = None) -> torch.Tensor:
        """3x3 convolution (stride 1, padding 1) of a channels-last (B, Cin, H, W) map, plus bias,
        then ReLU if asked, then the sum of up to two `residuals` shaped like the output."""
        b, cin, h, w = x.shape
        cl = torch.channels_last
        _check("conv3x3", packed, cout, x, bias, out, *residuals)
        _check_out("conv3x3", out, x, *residuals)
        if bias is not None and (bias.numel() != cout or not bias.is_contiguous()):
            raise ValueError("conv3x3: one bias value per output channel")
        if not x.is_contiguous(memory_format=cl) or packed.shape[1] != 9 * cin:
            raise ValueError("conv3x3: x must be a channels-last (B, Cin, H, W) map matching the packed weight")
        maps = list(residuals) + ([out] if out is not None else [])
        if len(residuals) > 2 or any(m.shape != (b, cout, h, w) or not m.is_contiguous(memory_format=cl)
                                     or m.dtype != x.dtype for m in maps):
            raise ValueError("conv3x3: residuals and out must be channels-last maps shaped like the output")
        if out is None:
            out = torch.empty(b, cout, h, w, dtype=x.dtype, memory_format=cl)
        res = [r.data_ptr() for r in residuals] + [None] * (2 - len(residuals))
        rc = self.lib.da_conv3x3(x.data_ptr(), b, h, w, cin, packed.data_ptr(), cout,
                                 None if bias is None else bias.data_ptr(), int(relu), res[0], res[1], out.data_ptr(),
                                 torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"da_conv3x3 failed ({rc})")
        return out

    def upsample_conv3x3(self, x: torch.Tensor, size: tuple[int, int], packed: torch.Tensor, bias: torch.Tensor,
                         head: tuple[torch.Tensor, float, bool] | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
        """conv3x3(bilinear upsample of x to `size`, align_corners=True) + bias, in one pass.

        x: channels-last (B, C, h, w). Returns channels-last (B, Cout, H, W); with `head` =
        (w2 (Cout,), b2, sigmoid) it finishes the DPT head instead: ReLU, 1x1 convolution to one
        channel, ReLU (or sigmoid) -> (B, 1, H, W).
        """
        b, c, hi, wi = x.shape
        ho, wo = size
        cout = bias.numel()
        _check("upsample_conv3x3", packed, cout, x, bias, out, None if head is None else head[0])
        _check_out("upsample_conv3x3", out, x)
        if not bias.is_contiguous() or ho < 1 or wo < 1:
            raise ValueError("upsample_conv3x3: a contiguous bias and a positive output size")
        if not x.is_contiguous(memory_format=torch.channels_last) or packed.shape[1] != 9 * c:
            raise ValueError("upsample_conv3x3: x must be channels-last and match the packed 3x3 weight")
        if head is None:
            mode, w2, b2 = 0, None, 0.0
            if out is None:
                out = torch.empty(b, cout, ho, wo, dtype=x.dtype, memory_format=torch.channels_last)
            elif out.shape != (b, cout, ho, wo) or not out.is_contiguous(memory_format=torch.channels_last):
                raise ValueError("upsample_conv3x3: out must be a channels-last map of the output's shape")
        else:
            w2, b2, sigmoid = head[0].contiguous(), float(head[1]), head[2]
            if w2.numel() != cout:
                raise ValueError("upsample_conv3x3: the 1x1 head weight must have one value per channel")
            mode = 2 if sigmoid else 1
            if out is not None:
                raise ValueError("upsample_conv3x3: the head epilogue returns a new map; out is not used")
            out = torch.empty(b, 1, ho, wo, dtype=x.dtype)
        rc = self.lib.da_upsample_conv3x3(x.data_ptr(), b, hi, wi, c, ho, wo, packed.data_ptr(), cout, bias.data_ptr(),
                                          mode, None if w2 is None else w2.data_ptr(), b2, out.data_ptr(),
                                          torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"da_upsample_conv3x3 failed ({rc})")
        return out


class _ScratchSet(dict):
    """Buffers of one forward at a time, by key."""


_free_sets: list[_ScratchSet] = []
# (set, thread id): a context copied into another thread (asyncio.to_thread, a thread pool) must
# not reuse the set of the forward running in the first one
_current_set: contextvars.ContextVar[tuple[_ScratchSet, int] | None] = contextvars.ContextVar("da_scratch",
                                                                                               default=None)


def _active_set() -> _ScratchSet | None:
    current = _current_set.get()
    return current[0] if current is not None and current[1] == threading.get_ident() else None
MAX_IDLE_SETS = 1          # sets kept between forwards; more concurrent forwards allocate afresh


@contextlib.contextmanager
def scratch_scope() -> Iterator[None]:
    """Lend one set of scratch buffers to the forward running inside (nested scopes share it).

    Sets are pooled, not tied to threads: a server with forty worker threads that runs one
    forward at a time keeps one set, not forty.
    """
    if _active_set() is not None:
        yield
        return
    with _pool_lock:
        bufs = _free_sets.pop() if _free_sets else _ScratchSet()
    token = _current_set.set((bufs, threading.get_ident()))
    try:
        yield
    finally:
        _current_set.reset(token)
        with _pool_lock:
            if len(_free_sets) < MAX_IDLE_SETS:
                _free_sets.append(bufs)


def scratch(key: str, like: torch.Tensor) -> torch.Tensor:
    """A buffer shaped and laid out like `like` (which may be on the meta device), reused under
    `key` by later forwards inside `scratch_scope()`; a fresh tensor outside any scope.

    For intermediate maps consumed within one forward: reusing them avoids fresh multi-megabyte
    allocations, whose page faults cost as much as a convolution's epilogue. Never hand one back
    to a caller: the next forward overwrites it.
    """
    cl = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    bufs = _active_set()
    buf = None if bufs is None else bufs.get(key)
    if (buf is None or buf.shape != like.shape or buf.dtype != like.dtype
            or buf.is_contiguous(memory_format=torch.channels_last) != cl):
        buf = torch.empty(like.shape, dtype=like.dtype).contiguous(memory_format=fmt)
        if bufs is not None:
            bufs[key] = buf
    return buf


def _work_buffer(floats: int) -> torch.Tensor:
    """A 32-byte aligned float32 scratch buffer of `floats` (see scratch())."""
    buf = scratch("attention.work", torch.empty(floats + 8, device="meta"))
    offset = (-buf.data_ptr() % 32) // 4
    return buf[offset: offset + floats]


_disabled: contextvars.ContextVar[bool] = contextvars.ContextVar("da_native_disabled", default=False)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch ops instead of the kernels inside this block (benchmarks, comparisons)."""
    token = _disabled.set(True)
    try:
        yield
    finally:
        _disabled.reset(token)


def load() -> Kernels | None:
    """The kernels, built and loaded once per process; None where they cannot run (see module
    doc) or inside `disabled()`."""
    if _disabled.get():
        return None
    key = str(cache_dir())
    with _lock:
        if key not in _loaded:
            _loaded[key] = _try_load()
        return _loaded[key]


def _try_load() -> Kernels | None:
    if os.environ.get("DA_STUDIO_NATIVE", "1") == "0":
        return None
    if not cpu_supported():
        log.info("native kernels skipped: this CPU has no AVX2/FMA")
        return None
    try:
        return Kernels(build())
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        log.warning("native CPU kernels unavailable, using PyTorch ops instead: %s", err)
        return None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether these tensors (an input, and the weights it meets) can go through the native
    kernels: all float32 on the CPU, no autograd, no autocast."""
    grad = torch.is_grad_enabled()
    return not torch.is_autocast_enabled("cpu") and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and not (t.requires_grad and grad) for t in tensors)
