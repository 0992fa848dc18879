"""The native CPU kernels (pipeline/model/native/kernels.c) against the PyTorch ops they replace.

Values, not shapes: every kernel is compared with PyTorch in float64 on awkward sizes (row and
column tails, strided inputs, batches, large logits), results must not depend on the thread
count, and the loader must fall back cleanly when the kernels cannot be built.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from pipeline.model import build_model, native_kernels, optimize_for_inference

kernels = native_kernels.load()
needs_kernels = pytest.mark.skipif(kernels is None, reason="native kernels unavailable (no AVX2/FMA or no C compiler)")


def _qkv(b, n, heads, d, gain=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3 * heads * d, generator=g) * gain


def _sdpa64(qkv, heads):
    b, n, c3 = qkv.shape
    q, k, v = qkv.double().view(b, n, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c3 // 3)


@needs_kernels
@pytest.mark.parametrize("b,n,heads,d,gain", [
    (1, 2036, 6, 64, 1.0),      # vits at 518x770
    (2, 37, 3, 64, 1.0),        # batch, a 5-key tail panel and a 1-row tail
    (1, 97, 2, 32, 1.0),        # head size 32 (the tiny test encoder)
    (1, 50, 2, 128, 1.0),
    (1, 130, 4, 64, 8.0),       # logits of +-hundreds: the max subtraction must hold
    (1, 1, 1, 16, 1.0),         # a single token attends to itself
])
def test_attention_matches_sdpa_in_float64(b, n, heads, d, gain):
    qkv = _qkv(b, n, heads, d, gain)
    ours = kernels.attention(qkv, heads).double()
    ref = _sdpa64(qkv, heads)                                              # float64
    torch_fp32 = (F.scaled_dot_product_attention(*qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0))
                  .transpose(1, 2).reshape(b, n, -1).double())
    fp32_err = (torch_fp32 - ref).abs().max().item()
    err = (ours - ref).abs().max().item()
    assert torch.isfinite(ours).all()
    assert err <= max(4 * fp32_err, 1e-6), (err, fp32_err)             # as close as PyTorch's own float32


@needs_kernels
def test_attention_on_a_strided_view_and_scale():
    big = _qkv(1, 40, 2, 32)
    qkv = torch.cat([big, torch.full((1, 40, 8), float("nan"))], dim=2)[..., : big.shape[-1]]   # row stride 200
    assert qkv.stride(1) != qkv.shape[-1]
    ours = kernels.attention(qkv, 2, scale=0.3).double()
    q, k, v = big.double().view(1, 40, 3, 2, 32).permute(2, 0, 3, 1, 4).unbind(0)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3).transpose(1, 2).reshape(1, 40, 64)
    assert (ours - ref).abs().max().item() < 1e-5


@needs_kernels
@pytest.mark.parametrize("epilogue", ["store", "gelu", "accumulate"])
@pytest.mark.parametrize("m,k,n", [(2036, 384, 1152), (37, 40, 50), (5, 3, 17), (100, 1536, 384)])
def test_linear_matches_torch_in_float64(epilogue, m, k, n):
    g = torch.Generator().manual_seed(m + k + n)
    x = torch.randn(m, k + 7, generator=g)[:, :k]                          # row stride k + 7
    w, b = torch.randn(n, k, generator=g) * k ** -0.5, torch.randn(n, generator=g)
    acc = torch.randn(m, n, generator=g)
    ref = x.double() @ w.double().T + b.double()
    if epilogue == "gelu":
        ref = F.gelu(ref)
    if epilogue == "accumulate":
        ref = ref + acc.double()
    out = acc.clone() if epilogue == "accumulate" else None
    ours = kernels.linear(x, kernels.pack_weight(w), b, n, epilogue, out=out)
    if epilogue == "accumulate":
        assert ours is out
    assert (ours.double() - ref).abs().max().item() < 2e-5 * max(1.0, k ** 0.5)


@needs_kernels
def test_gelu_epilogue_is_pytorchs_gelu_over_a_wide_range():
    x = torch.linspace(-12, 12, 4001).unsqueeze(1)                         # (M, 1) @ [[1]] = x
    ours = kernels.linear(x, kernels.pack_weight(torch.ones(1, 1)), torch.zeros(1), 1, "gelu")
    assert (ours - F.gelu(x)).abs().max().item() < 1e-6


@needs_kernels
def test_results_do_not_depend_on_the_thread_count():
    qkv, threads = _qkv(1, 300, 6, 64), torch.get_num_threads()
    x, w = torch.randn(300, 384), torch.randn(1152, 384)
    try:
        torch.set_num_threads(1)
        a1, l1 = kernels.attention(qkv, 6), kernels.linear(x, kernels.pack_weight(w), torch.zeros(1152), 1152)
        torch.set_num_threads(2)
        a2, l2 = kernels.attention(qkv, 6), kernels.linear(x, kernels.pack_weight(w), torch.zeros(1152), 1152)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a1, a2) and torch.equal(l1, l2)


@needs_kernels
def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        kernels.attention(_qkv(1, 4, 2, 24), 2)                           # head size not a multiple of 16
    with pytest.raises(ValueError):
        kernels.linear(torch.randn(4, 8), kernels.pack_weight(torch.randn(3, 8)), torch.zeros(3), 3, "accumulate")
    with pytest.raises(ValueError):
        kernels.linear(torch.randn(8, 4).T, kernels.pack_weight(torch.randn(3, 8)), torch.zeros(3), 3)
    with pytest.raises(ValueError, match="output channels"):                # would read past the weight
        kernels.linear(torch.randn(4, 8), kernels.pack_weight(torch.randn(3, 8)), torch.zeros(20), 20)
    with pytest.raises(ValueError, match="float32"):
        kernels.linear(torch.randn(4, 8, dtype=torch.float64), kernels.pack_weight(torch.randn(3, 8)),
                       torch.zeros(3), 3)
    with pytest.raises(ValueError, match="float32"):
        kernels.attention(_qkv(1, 4, 2, 16).double(), 2)
    with pytest.raises(ValueError, match="output channels"):
        kernels.conv3x3(torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last),
                        kernels.pack_conv(torch.randn(16, 4, 3, 3)), None, 32)


@needs_kernels
@pytest.mark.parametrize("version,metric", [("v1", False), ("v2", False), ("v2", True)])
def test_inference_model_uses_the_kernels_and_matches_the_plain_model(version, metric, monkeypatch):
    torch.manual_seed(0)
    model = build_model("vits", version, metric=metric).eval()
    x = torch.randn(2, 3, 98, 140)
    calls = []
    real = native_kernels.Kernels.attention
    monkeypatch.setattr(native_kernels.Kernels, "attention", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with torch.inference_mode():
        plain, fast = model(x), optimize_for_inference(model)(x)
    assert len(calls) == max(model.config.layers) + 1
    assert (plain - fast).abs().max().item() <= 1e-5 * max(1.0, plain.abs().max().item())


def test_the_torch_ops_run_when_the_kernels_are_unavailable(monkeypatch):
    monkeypatch.setattr(native_kernels, "load", lambda: None)
    torch.manual_seed(0)
    model = build_model("vitt", "v2").eval()
    x = torch.randn(1, 3, 56, 70)
    with torch.inference_mode():
        assert (model(x) - optimize_for_inference(model)(x)).abs().max().item() < 1e-5


@needs_kernels
def test_disabled_switches_to_the_torch_ops_and_back(monkeypatch):
    calls = []
    real = native_kernels.Kernels.attention
    monkeypatch.setattr(native_kernels.Kernels, "attention", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    torch.manual_seed(0)
    fast = optimize_for_inference(build_model("vits", "v2").eval())
    x = torch.randn(1, 3, 42, 56)
    with torch.inference_mode():
        with native_kernels.disabled():
            assert native_kernels.load() is None
            torch_ops = fast(x)
        assert calls == [] and native_kernels.load() is kernels
        native = fast(x)
    assert calls and (torch_ops - native).abs().max().item() <= 1e-5 * max(1.0, torch_ops.abs().max().item())


def test_kernels_are_not_used_under_autograd_or_for_other_dtypes():
    x = torch.randn(2, 3, requires_grad=True)
    assert not native_kernels.usable(x)
    assert native_kernels.usable(x.detach())
    assert not native_kernels.usable(x.detach().double())
    assert not native_kernels.usable(x.detach(), torch.zeros(3, dtype=torch.float64))    # weights count too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not native_kernels.usable(x.detach())


def test_no_compiler_is_a_clear_error_and_the_loader_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native_kernels, "_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C compiler"):
        native_kernels.build(cache=tmp_path)
    monkeypatch.setattr(native_kernels, "cache_dir", lambda: tmp_path)
    assert native_kernels._try_load() is None


def test_a_failing_build_leaves_no_partial_library(monkeypatch, tmp_path):
    bad = tmp_path / "kernels.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native_kernels, "SOURCE", bad)
    with pytest.raises(RuntimeError, match="failed to build"):
        native_kernels.build(cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("DA_STUDIO_NATIVE", "0")
    assert native_kernels._try_load() is None


@needs_kernels
def test_build_is_cached_by_source_hash(tmp_path):
    first = native_kernels.build(cache=tmp_path)
    stamp = os.stat(first).st_mtime_ns
    assert native_kernels.build(cache=tmp_path) == first and os.stat(first).st_mtime_ns == stamp
    assert native_kernels.Kernels(first).lib.da_abi_version() == native_kernels.ABI_VERSION


def _head_output_torch(x, size, conv3, conv1, sigmoid):
    up = F.interpolate(x, size, mode="bilinear", align_corners=True)
    out = F.conv2d(F.relu(F.conv2d(up, conv3.weight, conv3.bias, padding=1)), conv1.weight, conv1.bias)
    return torch.sigmoid(out) if sigmoid else F.relu(out)


@needs_kernels
@pytest.mark.parametrize("b,c,lo,size,sigmoid", [
    (1, 32, (296, 440), (518, 770), False),     # vits at 518x770: 32 channels, 1.75x upsampling
    (2, 32, (20, 30), (41, 57), True),          # batch, odd sizes, the metric head's sigmoid
    (1, 16, (5, 7), (5, 7), False),             # no upsampling, a row shorter than two tiles
    (1, 24, (1, 1), (14, 14), False),           # a single source pixel; channels not a multiple of 16
])
def test_upsample_conv_head_matches_the_torch_ops_in_float64(b, c, lo, size, sigmoid):
    torch.manual_seed(sum(size))
    conv3, conv1 = torch.nn.Conv2d(c, c, 3, 1, 1).double(), torch.nn.Conv2d(c, 1, 1).double()
    with torch.no_grad():
        conv1.bias.fill_(0.05)                                             # most outputs above the ReLU
    x = torch.randn(b, c, *lo, dtype=torch.float64)
    with torch.no_grad():
        ref = _head_output_torch(x, size, conv3, conv1, sigmoid)
        fp32 = _head_output_torch(x.float(), size, conv3.float(), conv1.float(), sigmoid).double()
        conv3.double(), conv1.double()
    ours = kernels.upsample_conv3x3(x.float().contiguous(memory_format=torch.channels_last), size,
                                    kernels.pack_conv(conv3.weight.float()), conv3.bias.float(),
                                    head=(conv1.weight.float().reshape(-1), conv1.bias.item(), sigmoid))
    assert ours.shape == (b, 1, *size)
    err, torch_err = (ours.double() - ref).abs().max().item(), (fp32 - ref).abs().max().item()
    assert err <= max(4 * torch_err, 1e-6), (err, torch_err)
    assert (ref > 0).float().mean() > 0.2                                 # the test sees real values


@needs_kernels
@pytest.mark.parametrize("cin,cout,lo,size", [(64, 32, (148, 220), (296, 440)), (20, 40, (6, 5), (11, 13))])
def test_upsample_conv_matches_the_torch_ops_in_float64(cin, cout, lo, size):
    torch.manual_seed(cin)
    conv = torch.nn.Conv2d(cin, cout, 3, 1, 1).double()
    x = torch.randn(1, cin, *lo, dtype=torch.float64)
    with torch.no_grad():
        ref = conv(F.interpolate(x, size, mode="bilinear", align_corners=True))
        fp32 = conv.float()(F.interpolate(x.float(), size, mode="bilinear", align_corners=True)).double()
    ours = kernels.upsample_conv3x3(x.float().contiguous(memory_format=torch.channels_last), size,
                                    kernels.pack_conv(conv.weight.detach()), conv.bias.detach())
    assert ours.shape == (1, cout, *size) and ours.is_contiguous(memory_format=torch.channels_last)
    err, torch_err = (ours.double() - ref).abs().max().item(), (fp32 - ref).abs().max().item()
    assert err <= max(4 * torch_err, 1e-6), (err, torch_err)


@needs_kernels
def test_upsample_conv_refuses_a_channels_first_map():
    x = torch.randn(1, 32, 6, 6)
    with pytest.raises(ValueError, match="channels-last"):
        kernels.upsample_conv3x3(x, (8, 8), kernels.pack_conv(torch.randn(32, 32, 3, 3)), torch.zeros(32),
                                 head=(torch.ones(32), 0.0, False))


@needs_kernels
@pytest.mark.parametrize("relu,n_res", [(False, 0), (True, 0), (False, 1), (False, 2)])
@pytest.mark.parametrize("cin,cout,h,w,bias", [(64, 64, 37, 55, True), (48, 40, 9, 13, False), (3, 16, 1, 7, True)])
def test_conv3x3_matches_torch_in_float64(relu, n_res, cin, cout, h, w, bias):
    g = torch.Generator().manual_seed(cin * h + w)
    cl = torch.channels_last
    x = torch.randn(2, cin, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) * (9 * cin) ** -0.5
    b = torch.randn(cout, generator=g, dtype=torch.float64) if bias else None
    res = [torch.randn(2, cout, h, w, generator=g, dtype=torch.float64) for _ in range(n_res)]
    ref = F.conv2d(x, wt, b, padding=1)
    ref = F.relu(ref) if relu else ref
    ref = ref + sum(res) if res else ref
    ours = kernels.conv3x3(x.float().contiguous(memory_format=cl), kernels.pack_conv(wt.float()),
                           None if b is None else b.float(), cout, relu=relu,
                           residuals=tuple(r.float().contiguous(memory_format=cl) for r in res))
    assert ours.is_contiguous(memory_format=cl)
    assert (ours.double() - ref).abs().max().item() < 2e-5 * max(1.0, ref.abs().max().item())


@needs_kernels
def test_scratch_maps_never_leak_into_results():
    """The head keeps intermediate maps in per-thread scratch buffers: a result must survive the
    next forward unchanged, and equal a fresh computation bit for bit."""
    torch.manual_seed(1)
    fast = optimize_for_inference(build_model("vits", "v2").eval())
    x1, x2 = torch.randn(1, 3, 70, 98), torch.randn(1, 3, 70, 98)
    with torch.inference_mode():
        first = fast(x1)
        kept = first.clone()
        fast(x2)
        again = fast(x1)
    assert torch.equal(first, kept) and torch.equal(first, again)


def test_scratch_buffers_are_reused_only_inside_a_scope_and_pooled_across_threads():
    import threading
    like = torch.empty(2, 3)
    assert native_kernels.scratch("probe", like) is not native_kernels.scratch("probe", like)   # no scope
    seen = []

    def forward():
        with native_kernels.scratch_scope():
            with native_kernels.scratch_scope():                          # nested: the same set
                seen.append(native_kernels.scratch("probe", like))
            assert native_kernels.scratch("probe", like) is seen[-1]

    for _ in range(3):                                                    # one forward at a time,
        t = threading.Thread(target=forward)                              # each on a new thread
        t.start()
        t.join()
    assert seen[0] is seen[1] is seen[2]                                  # one pooled set, not three


def test_a_scope_copied_into_another_thread_does_not_share_its_buffers():
    import contextvars
    import threading
    like, seen = torch.empty(4), {}
    with native_kernels.scratch_scope():
        seen["here"] = native_kernels.scratch("probe", like)
        ctx = contextvars.copy_context()                                  # what asyncio.to_thread does
        t = threading.Thread(target=lambda: seen.setdefault("there", ctx.run(native_kernels.scratch, "probe", like)))
        t.start()
        t.join()
    assert seen["there"] is not seen["here"]


@needs_kernels
def test_an_output_sharing_memory_with_an_input_is_refused():
    x = torch.randn(1, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="share memory"):
        kernels.conv3x3(x, kernels.pack_conv(torch.randn(16, 16, 3, 3)), None, 16, out=x)
    a = torch.randn(8, 8)
    with pytest.raises(ValueError, match="share memory"):
        kernels.linear(a, kernels.pack_weight(torch.randn(8, 8)), torch.zeros(8), 8, "accumulate", out=a)


@needs_kernels
def test_weights_changed_in_place_are_repacked():
    torch.manual_seed(2)
    model = build_model("vits", "v2").eval()
    fast = optimize_for_inference(model)
    x = torch.randn(1, 3, 42, 56)
    with torch.inference_mode():
        fast(x)                                                           # packs the shared qkv / fc1
    with torch.no_grad():
        model.encoder.pretrained.blocks[0].attn.qkv.weight.mul_(1.5)
        model.encoder.pretrained.blocks[0].mlp.fc1.weight.mul_(0.5)
    with torch.inference_mode():
        native = fast(x)
        with native_kernels.disabled():
            torch_ops = fast(x)
    assert (native - torch_ops).abs().max().item() <= 1e-5 * max(1.0, torch_ops.abs().max().item())


def test_a_float64_model_takes_the_torch_ops_instead_of_failing():
    torch.manual_seed(3)
    model = build_model("vitt", "v2").eval().double()
    x = torch.randn(1, 3, 42, 56, dtype=torch.float64)
    with torch.inference_mode():
        assert (model(x) - optimize_for_inference(model)(x)).abs().max().item() < 1e-10
