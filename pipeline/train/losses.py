"""Depth Anything's training losses, batched and masked (see ../shared/TRAINING-NOTES.md).

Conventions shared by every loss here:
- `pred`, `target`: float (B, H, W). Relative models predict affine-invariant *disparity*
  (larger = closer); metric models predict depth in metres (`silog_loss`).
- `mask`: bool (B, H, W), True where the label is usable. Pixels whose label is NaN or inf are
  dropped as well, so a label may carry NaN for "unknown". Nothing under a False pixel (label or
  prediction) can change a loss value or receive a gradient.
- Per-sample losses are computed first; the batch value is their mean over the samples that
  have at least one valid pixel. A fully masked sample therefore contributes exactly zero
  (never NaN), and a fully masked batch gives 0 with a zero gradient.
- `reduction="none"` returns the per-sample values (B,), e.g. for CutMix weighting.
- Losses are computed in float32 whatever the input dtype (bf16 autocast on GPU).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

EPS = 1e-6
GRADIENT_WEIGHT = 2.0      # V2: gradient-matching : affine-invariant = 2 : 1
AFFINE_WEIGHT = 1.0
FEATURE_ALPHA = 0.85       # V1 tolerance margin for the feature-alignment loss
SILOG_LAMBDA = 0.5         # V2 metric fine-tuning
METRIC_MIN_DEPTH = 1e-3    # V2 metric fine-tuning: labels below this are invalid


# ----------------------------------------------------------------------------- helpers

def valid_mask(target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """bool (B, H, W): `mask` (if given) and a finite label."""
    finite = torch.isfinite(target)
    return finite if mask is None else finite & mask.bool()


def _reduce(per_sample: torch.Tensor, has_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Mean over samples that have valid pixels (0 when none do), or the (B,) values."""
    per_sample = torch.where(has_valid, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.sum() / has_valid.sum().clamp(min=1)


def _masked_median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Lower median of x over valid pixels per sample, like torch.median. x, valid: (B, N) -> (B,)."""
    n = valid.sum(dim=1)                                       # (B,)
    filled = torch.where(valid, x, torch.full_like(x, float("inf")))
    ordered, _ = filled.sort(dim=1)                            # valid values first
    idx = ((n - 1).clamp(min=0) // 2).unsqueeze(1)             # (B, 1)
    med = ordered.gather(1, idx).squeeze(1)
    return torch.where(n > 0, med, torch.zeros_like(med))


def median_mad_normalize(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(d - median) / mean|d - median| over valid pixels, per sample. (B, H, W) -> (B, H, W).

    Invalid pixels come out as 0. This is the scale-and-shift normalisation of MiDaS / Depth
    Anything V1: t(d) = median, s(d) = mean absolute deviation from it.
    """
    b = d.shape[0]
    flat = torch.where(valid, d, torch.zeros_like(d)).reshape(b, -1)   # (B, N)
    vflat = valid.reshape(b, -1)
    t = _masked_median(flat, vflat)                                     # (B,)
    dev = (flat - t[:, None]).abs() * vflat
    s = dev.sum(dim=1) / vflat.sum(dim=1).clamp(min=1)                 # (B,)
    out = (flat - t[:, None]) / s.clamp(min=EPS)[:, None]
    return torch.where(vflat, out, torch.zeros_like(out)).reshape(d.shape)


def _kept(err: torch.Tensor, valid: torch.Tensor, trim: float) -> torch.Tensor:
    """bool (B, N): the valid pixels left after dropping each sample's `trim` share of largest errors.

    err, valid: (B, N). Keeps floor((1 - trim) * n_valid) pixels (at least one when any is valid).
    """
    if trim <= 0:
        return valid
    if not 0 <= trim < 1:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    n = valid.sum(dim=1)                                                # (B,)
    keep = torch.floor(n.to(err.dtype) * (1.0 - trim)).long().clamp(min=1)
    filled = torch.where(valid, err.detach(), torch.full_like(err, float("inf")))
    order = filled.argsort(dim=1, stable=True)                          # smallest errors first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(err.shape[1], device=err.device).expand_as(order))
    return valid & (rank < keep[:, None])


def _trimmed_mean(err: torch.Tensor, valid: torch.Tensor, trim: float) -> torch.Tensor:
    """Per-sample mean of err over valid pixels, dropping the `trim` share of largest errors. -> (B,)"""
    kept = _kept(err, valid, trim)
    return (err * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1).to(err.dtype)


def _normalised_difference(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """d̂ - d̂* with both maps median/MAD-normalised over the valid pixels; 0 elsewhere. (B, H, W)"""
    target = torch.where(valid, target, torch.zeros_like(target))
    return median_mad_normalize(pred, valid) - median_mad_normalize(target, valid)


# ----------------------------------------------------------------------------- relative losses

def affine_invariant_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                          *, trim: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Scale-and-shift-invariant L1 on disparity (V1 eq. 1-3): mean |d̂* - d̂| over valid pixels.

    `trim=0.1` drops each sample's 10% largest-error pixels (V2's rule for pseudo-labels); the
    normalisation itself always uses every valid pixel.
    """
    pred, target = pred.float(), target.float()                        # fp32 even under bf16 autocast
    valid = valid_mask(target, mask)                                   # (B, H, W)
    b = pred.shape[0]
    err = _normalised_difference(pred, target, valid).abs().reshape(b, -1)   # (B, N)
    per_sample = _trimmed_mean(err, valid.reshape(b, -1), trim)
    return _reduce(per_sample, valid.reshape(b, -1).any(dim=1), reduction)


def _gradient_term(diff: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of |∂x diff| + |∂y diff| over pixel pairs that are both valid, and the valid count. -> (B,), (B,)"""
    vx = valid[:, :, 1:] & valid[:, :, :-1]
    vy = valid[:, 1:, :] & valid[:, :-1, :]
    gx = (diff[:, :, 1:] - diff[:, :, :-1]).abs() * vx
    gy = (diff[:, 1:, :] - diff[:, :-1, :]).abs() * vy
    return gx.sum(dim=(1, 2)) + gy.sum(dim=(1, 2)), valid.sum(dim=(1, 2))


def _multiscale_gradient(diff: torch.Tensor, use: torch.Tensor, scales: int) -> torch.Tensor:
    total = diff.new_zeros(diff.shape[0])
    for k in range(scales):
        step = 2 ** k
        g, n = _gradient_term(diff[:, ::step, ::step], use[:, ::step, ::step])
        total = total + g / n.clamp(min=1).to(g.dtype)
    return total


def gradient_matching_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                           *, scales: int = 4, reduction: str = "mean", keep: torch.Tensor | None = None) -> torch.Tensor:
    """MiDaS multi-scale gradient matching on the normalised maps.

    At scale k (k = 0..scales-1) both maps are subsampled with step 2**k (as MiDaS does); the
    loss is Σ_k Σ (|∂x R| + |∂y R|) / n_used(k), R = d̂ - d̂*, gradients only between two used
    pixels (valid, and in `keep` when given: the pixels trimming left). The normalisation
    (median / MAD) is computed once at full resolution over every valid pixel.
    """
    pred, target = pred.float(), target.float()
    valid = valid_mask(target, mask)
    use = valid if keep is None else valid & keep.bool()
    total = _multiscale_gradient(_normalised_difference(pred, target, valid), use, scales)
    return _reduce(total, valid.flatten(1).any(dim=1), reduction)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               trim: float = 0.0, gradient_weight: float = GRADIENT_WEIGHT,
               affine_weight: float = AFFINE_WEIGHT, scales: int = 4, reduction: str = "mean") -> torch.Tensor:
    """V2's combined loss: affine_weight · affine-invariant + gradient_weight · gradient matching.

    `trim` (pseudo-labels, V2: 10 %) removes each sample's largest-error pixels of the affine term
    from BOTH terms: V2 ignores those pixels for the whole loss, so the gradient term only pairs
    pixels that were kept. Set `gradient_weight=0` for noisy labels (V2: it helps only with precise ones).
    """
    pred, target = pred.float(), target.float()
    valid = valid_mask(target, mask)                                            # (B, H, W)
    b = pred.shape[0]
    diff = _normalised_difference(pred, target, valid)                         # (B, H, W)
    err = diff.abs().reshape(b, -1)
    kept = _kept(err, valid.reshape(b, -1), trim)                              # (B, N)
    per_sample = affine_weight * (err * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1).to(err.dtype)
    if gradient_weight:
        per_sample = per_sample + gradient_weight * _multiscale_gradient(diff, kept.reshape(valid.shape), scales)
    return _reduce(per_sample, valid.reshape(b, -1).any(dim=1), reduction)


# ----------------------------------------------------------------------------- CutMix

def cutmix_loss(pred: torch.Tensor, target_a: torch.Tensor, target_b: torch.Tensor, box: torch.Tensor,
                mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None, *,
                loss_fn: Callable[..., torch.Tensor] = affine_invariant_loss, reduction: str = "mean",
                **loss_kwargs) -> torch.Tensor:
    """Loss on a CutMix image u = u_a ⊙ M + u_b ⊙ (1 - M) (V1, sec. 3.3).

    L = (ΣM/HW) · L(pred, target_a | M) + (Σ(1-M)/HW) · L(pred, target_b | 1-M), each region
    normalised and scored against its own label. `box` (M): bool/0-1 (B, H, W), True where the
    pixels came from image a. An un-mixed sample has M = 0 and its own label as target_b.
    `loss_fn(pred, target, mask, reduction="none", **loss_kwargs)` must return (B,) values.
    """
    m = box.bool()
    w_a = m.flatten(1).float().mean(dim=1)                                  # (B,) ΣM / HW
    in_a = m if mask_a is None else m & mask_a.bool()
    in_b = ~m if mask_b is None else ~m & mask_b.bool()
    l_a = loss_fn(pred, target_a, in_a, reduction="none", **loss_kwargs)
    l_b = loss_fn(pred, target_b, in_b, reduction="none", **loss_kwargs)
    per_sample = w_a.to(l_a.dtype) * l_a + (1 - w_a).to(l_b.dtype) * l_b
    has_valid = valid_mask(target_a, in_a).flatten(1).any(1) | valid_mask(target_b, in_b).flatten(1).any(1)
    return _reduce(per_sample, has_valid, reduction)


# ----------------------------------------------------------------------------- features, pairs, metric

def feature_alignment_loss(student_feats: torch.Tensor, teacher_feats: torch.Tensor,
                           alpha: float = FEATURE_ALPHA, mask: torch.Tensor | None = None,
                           *, dim: int = -1) -> torch.Tensor:
    """V1's feature alignment: 1 - mean cos(f_i, f'_i) over positions with cos <= alpha.

    Feats: (B, N, C) patch tokens (dim=-1) or (B, C, h, w) maps (dim=1). The teacher (frozen
    DINOv2) side is detached. Positions whose cosine already exceeds alpha are excluded (V1
    tolerance margin); `mask` (B, N) or (B, h, w) bool optionally excludes more. Returns 0 when
    no position is left.
    """
    cos = F.cosine_similarity(student_feats.float(), teacher_feats.detach().float(), dim=dim, eps=1e-8)  # (B, N) / (B, h, w)
    keep = cos.detach() <= alpha
    if mask is not None:
        keep = keep & mask.bool()
    n = keep.sum()
    total = torch.where(keep, 1.0 - cos, torch.zeros_like(cos)).sum()
    return total / n.clamp(min=1).to(total.dtype)


def ranking_loss(pred: torch.Tensor, pairs: torch.Tensor, mask: torch.Tensor | None = None,
                 *, normalize: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Pairwise ranking loss on disparity: log(1 + exp(-(d_closer - d_farther))).

    Sign convention: larger disparity = closer, so the loss is small when the point annotated
    as closer has the larger predicted disparity. `pairs`: long (B, P, 5) or (P, 5) for B = 1,
    rows (h1, w1, h2, w2, closer) with closer = 1 (point 1 closer), 2 (point 2 closer) or 0
    (padding / equal: ignored). Pairs with a point outside the image or on a masked pixel are
    ignored. With `normalize`, the prediction is first median/MAD-normalised over `mask` so the
    loss does not depend on the arbitrary scale of relative disparity.
    """
    pred = pred.float()
    b, h, w = pred.shape
    if pairs.dim() == 2:
        pairs = pairs.unsqueeze(0).expand(b, -1, -1)
    pairs = pairs.long()
    valid = torch.ones_like(pred, dtype=torch.bool) if mask is None else mask.bool()
    d = median_mad_normalize(pred, valid) if normalize else pred
    h1, w1, h2, w2, closer = pairs.unbind(-1)                                   # (B, P) each
    inside = (h1 >= 0) & (h1 < h) & (w1 >= 0) & (w1 < w) & (h2 >= 0) & (h2 < h) & (w2 >= 0) & (w2 < w)
    idx1 = (h1.clamp(0, h - 1) * w + w1.clamp(0, w - 1))
    idx2 = (h2.clamp(0, h - 1) * w + w2.clamp(0, w - 1))
    flat, vflat = d.reshape(b, -1), valid.reshape(b, -1)
    use = inside & (closer > 0) & vflat.gather(1, idx1) & vflat.gather(1, idx2)     # (B, P)
    d1, d2 = flat.gather(1, idx1), flat.gather(1, idx2)
    margin = torch.where(closer == 1, d1 - d2, d2 - d1)
    per_pair = torch.where(use, F.softplus(-margin), torch.zeros_like(margin))
    per_sample = per_pair.sum(dim=1) / use.sum(dim=1).clamp(min=1)
    return _reduce(per_sample, use.any(dim=1), reduction)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               lambd: float = SILOG_LAMBDA, min_depth: float = METRIC_MIN_DEPTH,
               max_depth: float | None = None) -> torch.Tensor:
    """Scale-invariant log loss of V2's metric fine-tuning, pooled over the batch as there:

    sqrt(mean(g²) - λ·mean(g)²), g = log(target) - log(pred) over valid pixels (mask, finite
    label, min_depth <= label <= max_depth). Predictions are clamped at min_depth before the log.
    Returns 0 with zero gradient when nothing is valid or the loss is exactly 0.
    """
    pred, target = pred.float(), target.float()
    valid = valid_mask(target, mask) & (target >= min_depth)            # NaN compares False
    if max_depth is not None:
        valid = valid & (target <= max_depth)
    safe_t = torch.where(valid, target, torch.ones_like(target))
    g = torch.where(valid, torch.log(safe_t) - torch.log(pred.clamp(min=min_depth)), torch.zeros_like(pred))
    n = valid.sum().clamp(min=1).to(g.dtype)
    mean_g = g.sum() / n
    var = (g * g).sum() / n - lambd * mean_g * mean_g
    ok = var > 1e-12
    return torch.where(ok, torch.sqrt(torch.where(ok, var, torch.ones_like(var))), torch.zeros_like(var))


def silog_per_sample(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                     lambd: float = SILOG_LAMBDA, min_depth: float = METRIC_MIN_DEPTH,
                     max_depth: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`silog_loss` per image: ((B,) values, (B,) bool has a valid pixel). The training objective
    averages these over the global batch, so the loss does not depend on how the batch is split over
    processes (the official code pools the batch's pixels; on one image the two agree). An image
    without a valid pixel gives 0 with zero gradient."""
    pred, target = pred.float(), target.float()
    valid = valid_mask(target, mask) & (target >= min_depth)
    if max_depth is not None:
        valid = valid & (target <= max_depth)
    safe_t = torch.where(valid, target, torch.ones_like(target))
    g = torch.where(valid, torch.log(safe_t) - torch.log(pred.clamp(min=min_depth)), torch.zeros_like(pred))
    b = g.shape[0]
    n = valid.reshape(b, -1).sum(1)                                             # (B,)
    nf = n.clamp(min=1).to(g.dtype)
    mean_g = g.reshape(b, -1).sum(1) / nf
    var = (g * g).reshape(b, -1).sum(1) / nf - lambd * mean_g * mean_g
    ok = var > 1e-12
    values = torch.where(ok, torch.sqrt(torch.where(ok, var, torch.ones_like(var))), torch.zeros_like(var))
    return values, n > 0
