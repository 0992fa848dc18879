"""Inference-only ViT blocks: the same arithmetic as timm's DINOv2 block, fewer memory passes.

Two rewrites, both exact up to float rounding (they only reassociate additions/products):
  * LayerScale folded into the projection it follows: (W h + b) * g == (g W) h + g b,
    which removes 24 element-wise multiplies from a vits forward.
  * The residual add fused into the GEMM: x += b' then x += h W'^T via an in-place addmm,
    which removes the residual add and the bias-broadcast copy of proj and fc2.
Blocks of another shape (q/k norms, gates, an unknown MLP) are kept as they are.

On an AVX2 CPU in float32 the block runs on the native kernels (native_kernels.py): the four
linear layers as packed-weight GEMMs with the bias, the GELU and the residual add in their
epilogues, and the attention read straight out of the qkv projection. Same mathematics, float32
rounding differences only; anywhere else (CUDA, autocast, no compiler) the PyTorch ops below run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import GluMlp, LayerScale, Mlp
from torch import nn

from . import native_kernels


def _gamma(ls: nn.Module, dim: int, like: torch.Tensor) -> torch.Tensor:
    """The per-channel scale of a LayerScale (ones for an Identity)."""
    if isinstance(ls, LayerScale):
        return ls.gamma.detach()
    return torch.ones(dim, dtype=like.dtype, device=like.device)


def _foldable(block: nn.Module) -> bool:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if attn is None or mlp is None or type(mlp) not in (Mlp, GluMlp):
        return False
    plain = all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm"))
    return (plain and getattr(attn, "gate", None) is None
            and all(isinstance(getattr(block, n), (LayerScale, nn.Identity)) for n in ("ls1", "ls2"))
            and all(isinstance(getattr(block, n), nn.Identity) for n in ("drop_path1", "drop_path2")))


def _mlp_hidden(mlp: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Everything of timm's Mlp / GluMlp before fc2 (eval mode: dropout is the identity)."""
    h = mlp.fc1(h)
    if isinstance(mlp, GluMlp):
        a, b = h.chunk(2, dim=mlp.chunk_dim)
        h = a * mlp.act(b) if mlp.gate_last else mlp.act(a) * b
    else:
        h = mlp.act(h)
    return mlp.norm(h)


class InferenceBlock(nn.Module):
    """A DINOv2 block for inference. Updates its input in place and returns it: (B, N, C)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        attn, mlp = block.attn, block.mlp
        self.norm1, self.norm2, self.qkv, self.mlp = block.norm1, block.norm2, attn.qkv, mlp
        self.num_heads = attn.num_heads
        dim = attn.proj.weight.shape[0]
        with torch.no_grad():
            g1 = _gamma(block.ls1, dim, attn.proj.weight)
            g2 = _gamma(block.ls2, dim, mlp.fc2.weight)
            # New tensors (the training model's parameters stay untouched). (out, in) layouts.
            self.register_buffer("proj_w", attn.proj.weight * g1[:, None])
            self.register_buffer("proj_b", _bias(attn.proj, dim) * g1)
            self.register_buffer("fc2_w", mlp.fc2.weight * g2[:, None])
            self.register_buffer("fc2_b", _bias(mlp.fc2, dim) * g2)
        self.native_ok = (type(mlp) is Mlp and isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none"
                          and isinstance(mlp.norm, nn.Identity) and dim % self.num_heads == 0
                          and (dim // self.num_heads) % native_kernels.NR == 0)
        self._packed: dict[str, torch.Tensor] | None = None
        self._packed_versions: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels = native_kernels.load() if self.native_ok and native_kernels.usable(x, self.proj_w) else None
        if kernels is not None:
            return self._forward_native(kernels, x)
        b, n, c = x.shape
        x = x.contiguous()
        flat = x.view(b * n, c)                                                   # (B*N, C)
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                            # (B, heads, N, d)
        a = F.scaled_dot_product_attention(q, k, v)                               # (B, heads, N, d)
        a = a.transpose(1, 2).reshape(b * n, c)                                   # (B*N, C)
        _residual_linear(flat, a, self.proj_w, self.proj_b)
        h = _mlp_hidden(self.mlp, self.norm2(x))                                  # (B, N, hidden)
        _residual_linear(flat, h.reshape(b * n, -1), self.fc2_w, self.fc2_b)
        return x

    def _pack(self, kernels: native_kernels.Kernels) -> dict[str, torch.Tensor]:
        """The four weights packed for the native GEMM (made on the first native call, then kept)."""
        versions = (self.qkv.weight._version, self.mlp.fc1.weight._version,
                    *(b._version for b in (self.qkv.bias, self.mlp.fc1.bias) if b is not None))
        if self._packed is None or self._packed_versions != versions:     # the shared weights changed
            self._packed_versions = versions
            with torch.no_grad():
                fc1 = self.mlp.fc1
                self._packed = {
                    "qkv": kernels.pack_weight(self.qkv.weight), "qkv_b": _bias(self.qkv, self.qkv.weight.shape[0]),
                    "proj": kernels.pack_weight(self.proj_w), "fc1": kernels.pack_weight(fc1.weight),
                    "fc1_b": _bias(fc1, fc1.weight.shape[0]), "fc2": kernels.pack_weight(self.fc2_w)}
        return self._packed

    def _forward_native(self, kernels: native_kernels.Kernels, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        w = self._pack(kernels)
        x = x.contiguous()
        flat = x.view(b * n, c)
        qkv = kernels.linear(self.norm1(x).view(b * n, c), w["qkv"], w["qkv_b"], 3 * c)        # (B*N, 3C)
        a = kernels.attention(qkv.view(b, n, 3 * c), self.num_heads)                           # (B, N, C)
        kernels.linear(a.view(b * n, c), w["proj"], self.proj_b, c, "accumulate", out=flat)
        h = kernels.linear(self.norm2(x).view(b * n, c), w["fc1"], w["fc1_b"], w["fc1_b"].numel(), "gelu")
        kernels.linear(h, w["fc2"], self.fc2_b, c, "accumulate", out=flat)
        return x


def _residual_linear(acc: torch.Tensor, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> None:
    """acc += h @ w.T + b, in place. (M, out) += (M, in) @ (in, out)."""
    if h.dtype == acc.dtype == w.dtype and not torch.is_autocast_enabled(acc.device.type):
        acc.add_(b).addmm_(h, w.t())               # one GEMM accumulating into the residual stream
    else:                                          # autocast / mixed dtypes: let F.linear cast
        acc.add_(F.linear(h, w, b))


def _bias(linear: nn.Linear, dim: int) -> torch.Tensor:
    if linear.bias is not None:
        return linear.bias
    return torch.zeros(dim, dtype=linear.weight.dtype, device=linear.weight.device)


def inference_blocks(vit: nn.Module) -> nn.ModuleList:
    """The ViT's blocks, each folded for inference where its shape allows it."""
    return nn.ModuleList(InferenceBlock(b) if _foldable(b) else b for b in vit.blocks)
