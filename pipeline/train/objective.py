"""The training objective of one micro-batch, from the losses in `pipeline.train.losses`.

    L = mean of the terms present in the step (loss_reduction "mean", V1: the average of the labelled,
        unlabelled and feature losses; "sum" adds them) of
        L_labelled, L_pseudo, feature_weight * L_feat, ranking_weight * L_rank
    L_labelled = affine-invariant + gradient_weight x gradient matching        (V2)
    L_pseudo   = the same with `trim` (10 %) of each sample's largest-error pixels removed from both
                 terms (V2), CutMix-weighted by area (V1)
    L_feat     = 1 - cos(student, frozen DINOv2) over positions below alpha, pseudo images only (V1),
                 and only over tokens whose patch is mostly (> 50 %) valid in the store's mask
    L_rank     = ranking loss on the store's point pairs (own-image pixels only)
A metric run (cfg.metric, V2's metric fine-tuning) has one term instead:
    L_silog    = SiLog (lambda `silog_lambda`) per image over ground truth within [min_depth, max_depth]

Each term is a mean over the samples of the *global* batch that have something to score. Under
DDP every rank contributes (its sum) / (global count) x world_size, so DDP's gradient averaging
yields exactly the gradient of the global mean, however unevenly the samples fall on the ranks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import PATCH_SIZE
from . import losses
from .batches import Batch
from .distributed import DistContext, all_reduce_sum
from .train_config import TrainConfig

TERMS = ("labelled", "pseudo", "feature", "ranking", "silog")


def token_mask(masks: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Pixel masks (B, H, W) bool -> (B, N) bool over the encoder's (H/14, W/14) token grid,
    row-major like the patch tokens. Rule: a token counts when more than half of the pixels of
    its 14x14 patch are valid (exactly half does not)."""
    b, h, w = masks.shape
    gh, gw = h // PATCH_SIZE, w // PATCH_SIZE
    if gh * gw != n_tokens:
        raise ValueError(f"{n_tokens} tokens do not tile a {h}x{w} mask in {PATCH_SIZE}-pixel patches")
    share = F.adaptive_avg_pool2d(masks.float().unsqueeze(1), (gh, gw))               # (B, 1, gh, gw)
    return (share > 0.5).flatten(1)                                                   # (B, N)


def per_sample_terms(pred: torch.Tensor, feats: torch.Tensor | None, frozen: torch.Tensor | None,
                     b: Batch, cfg: TrainConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """term -> ((B,) values, (B,) bool: counts towards the mean). pred (B, S, S) float32."""
    if cfg.metric:                                          # metres against metric ground truth
        return {"silog": losses.silog_per_sample(pred, b.labels, b.masks, lambd=cfg.silog_lambda,
                                                 min_depth=cfg.min_depth, max_depth=cfg.max_depth)}
    lab, ps = ~b.pseudo, b.pseudo
    labelled = losses.depth_loss(pred, b.labels, b.masks, trim=0.0, gradient_weight=cfg.gradient_weight,
                                 reduction="none")
    pseudo = losses.cutmix_loss(pred, b.labels, b.labels_b, b.box, b.masks, b.masks_b, loss_fn=losses.depth_loss,
                                trim=cfg.trim, gradient_weight=cfg.gradient_weight, reduction="none")
    has_a = losses.valid_mask(b.labels, b.masks & b.box).flatten(1).any(1)
    has_b = losses.valid_mask(b.labels_b, b.masks_b & ~b.box).flatten(1).any(1)
    has_own = losses.valid_mask(b.labels, b.masks).flatten(1).any(1)
    out = {"labelled": (labelled, lab & has_own), "pseudo": (pseudo, ps & (has_a | has_b))}
    if feats is not None and frozen is not None and cfg.uses_feature_alignment:
        seen = torch.where(b.box, b.masks, b.masks_b)        # (B, S, S) valid pixels of the (mixed) input
        tokens = token_mask(seen, feats.shape[1])                                     # (B, N)
        vals = torch.stack([losses.feature_alignment_loss(feats[i:i + 1].float(), frozen[i:i + 1].float(),
                                                          alpha=cfg.feature_alpha, mask=tokens[i:i + 1])
                            for i in range(len(b))])
        out["feature"] = (vals, ps & tokens.any(1))                  # pseudo images with a token to align
    if cfg.ranking_weight > 0 and bool((b.pairs[..., 4] > 0).any()):
        rank_mask = torch.isfinite(b.labels) & b.masks & b.box
        vals = losses.ranking_loss(pred, b.pairs, rank_mask, reduction="none")
        out["ranking"] = (vals, vals > 0)
    return out


WEIGHT = {"labelled": lambda c: 1.0, "pseudo": lambda c: 1.0, "silog": lambda c: 1.0,
          "feature": lambda c: c.feature_weight, "ranking": lambda c: c.ranking_weight}


def combine(terms: dict[str, tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
            ctx: DistContext) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to back-propagate on this rank, {term: global mean value, "loss": global total})."""
    device = next(iter(terms.values()))[0].device
    sums = torch.stack([terms[t][0].mul(terms[t][1]).sum() if t in terms else torch.zeros((), device=device)
                        for t in TERMS])                                             # (T,) with grad
    counts = torch.stack([terms[t][1].sum().float() if t in terms else torch.zeros((), device=device)
                          for t in TERMS])
    raw_counts = all_reduce_sum(counts, ctx)
    g_counts = raw_counts.clamp(min=1)
    g_sums = all_reduce_sum(sums.detach(), ctx)
    weights = torch.tensor([WEIGHT[t](cfg) for t in TERMS], device=device)
    present = float((raw_counts > 0).sum().clamp(min=1)) if cfg.loss_reduction == "mean" else 1.0
    loss = (weights * sums / g_counts).sum() * ctx.world_size / present
    means = (g_sums / g_counts).tolist()
    logged = {t: float(v) for t, v, c in zip(TERMS, means, raw_counts.tolist(), strict=True) if c > 0}
    logged["loss"] = float((weights * g_sums / g_counts).sum()) / present
    return loss, logged
