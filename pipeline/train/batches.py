"""Which items each step trains on, and turning them into tensors (augmented, on the device).

Sampling is a pure function of (seed, how many items each pool has handed out): each pool is
walked through a fresh seeded permutation per epoch, and every view's randomness comes from a
generator keyed by the item's position in that walk. So a resumed run sees exactly the batches
an uninterrupted one would, and DDP with N processes x batch b sees exactly the items (and
augmentations) of one process with batch N x b: the global batch is drawn once, and rank r
takes every N-th entry starting at r.

A global micro-batch of G entries holds labelled and pseudo-labelled items in the configured
ratio, kept exact over time (the labelled share after c entries is floor(c * l / (l + p))).
A pseudo-labelled entry is CutMixed with the next pseudo-labelled entry of the same global
batch (cyclically), whose view is rebuilt from the same key, so the mix is rank-independent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import StrongPerturbation, cutmix_box, labelled_view, make_generator, mix, unlabelled_views
from .data import POOLS, TrainItem, check_sample

_VIEW, _BOX, _PERM = 1, 2, 3


@dataclass(frozen=True)
class PoolDraw:
    pool: str          # "labelled" | "pseudo"
    position: int      # how many items this pool had handed out before this one (its key)
    index: int         # index into the pool


class MixedSampler:
    """Draws global micro-batches from the pools; its whole state is the per-pool counters."""

    def __init__(self, pools: dict[str, list[TrainItem]], ratio: tuple[int, int], seed: int):
        self.sizes = {p: len(pools[p]) for p in POOLS}
        lab, pse = ratio
        if self.sizes["labelled"] == 0:
            lab, pse = 0, 1
        if self.sizes["pseudo"] == 0:
            lab, pse = 1, 0
        self.frac = lab / (lab + pse)
        self.seed = seed
        self.consumed = {p: 0 for p in POOLS}
        self._perm_cache: dict[tuple[str, int], list[int]] = {}

    def _index(self, pool: str, position: int) -> int:
        n = self.sizes[pool]
        epoch = position // n
        key = (pool, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            g = make_generator(self.seed, _PERM, POOLS.index(pool), epoch)
            self._perm_cache[key] = torch.randperm(n, generator=g).tolist()
        return self._perm_cache[key][position % n]

    def next_batch(self, size: int) -> list[PoolDraw]:
        total = self.consumed["labelled"] + self.consumed["pseudo"]
        n_lab = int((total + size) * self.frac + 1e-9) - int(total * self.frac + 1e-9)
        out = []
        for pool, n in (("labelled", n_lab), ("pseudo", size - n_lab)):
            for _ in range(n):
                pos = self.consumed[pool]
                out.append(PoolDraw(pool, pos, self._index(pool, pos)))
                self.consumed[pool] += 1
        return out

    def state_dict(self) -> dict:
        return {"consumed": dict(self.consumed), "sizes": dict(self.sizes), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = {p: int(state["consumed"][p]) for p in POOLS}


def strong_perturbation(cfg) -> StrongPerturbation:
    """The run's strong perturbations from its TrainConfig (the owner of these settings): off
    switches set the probabilities to 0 (the draws still happen, so the randomness stays aligned)."""
    on = cfg.perturbations
    return StrongPerturbation(jitter_p=cfg.jitter_p if on else 0.0, brightness=cfg.brightness, contrast=cfg.contrast,
                              saturation=cfg.saturation, hue=cfg.hue, grayscale_p=cfg.grayscale_p if on else 0.0,
                              blur_p=cfg.blur_p if on else 0.0, blur_sigma=tuple(cfg.blur_sigma),
                              cutmix_p=cfg.cutmix_p if cfg.cutmix else 0.0)


def local_entries(batch: list[PoolDraw], rank: int, world: int) -> list[tuple[PoolDraw, PoolDraw | None]]:
    """This rank's entries, each with its CutMix partner (pseudo entries only)."""
    pseudo = [e for e in batch if e.pool == "pseudo"]
    partner = {e: pseudo[(i + 1) % len(pseudo)] for i, e in enumerate(pseudo)}
    return [(e, partner.get(e)) for e in batch[rank::world]]


@dataclass
class Batch:
    """One rank's micro-batch. S = crop size; unlabelled pixels and padding are masked out."""

    images: torch.Tensor        # (B, 3, S, S) student input in [0, 1] (perturbed + mixed for pseudo)
    labels: torch.Tensor        # (B, S, S) disparity of the own image (NaN unknown)
    masks: torch.Tensor         # (B, S, S) bool
    labels_b: torch.Tensor      # (B, S, S) CutMix partner's label (pseudo) / copy of labels
    masks_b: torch.Tensor       # (B, S, S) bool
    box: torch.Tensor           # (B, S, S) bool: True where pixels come from the own image a; all True for labelled
    pairs: torch.Tensor         # (B, P, 5) long, closer 0 = padding
    pseudo: torch.Tensor        # (B,) bool
    clean: torch.Tensor         # (B, 3, S, S) clean view (teacher input) of the own image
    clean_b: torch.Tensor       # (B, 3, S, S) clean view of the partner
    need_teacher: torch.Tensor  # (B,) bool: own label missing
    need_teacher_b: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _view(item: TrainItem, entry: PoolDraw, seed: int, size: int, strong: StrongPerturbation):
    g = make_generator(seed, _VIEW, POOLS.index(entry.pool), entry.position)
    sample = check_sample(item.load(), item)
    if entry.pool == "labelled":
        v = labelled_view(sample, g, size)
        return v, v.image
    return unlabelled_views(sample, g, size, strong)


def _label_of(view, size: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if view.label is None:
        return torch.full((size, size), float("nan")), torch.zeros(size, size, dtype=torch.bool), True
    mask = torch.isfinite(view.label) if view.mask is None else view.mask & torch.isfinite(view.label)
    return view.label.float(), mask, False


def build_batch(pools: dict[str, list[TrainItem]], entries: list[tuple[PoolDraw, PoolDraw | None]], *,
                seed: int, size: int, cutmix_p: float, strong: StrongPerturbation = StrongPerturbation()) -> Batch:
    cols: dict[str, list] = {k: [] for k in Batch.__dataclass_fields__}
    for entry, partner in entries:
        view, student = _view(pools[entry.pool][entry.index], entry, seed, size, strong)
        label, mask, need = _label_of(view, size)
        if partner is None:                                   # labelled: no mixing
            view_b, label_b, mask_b, need_b = view, label, mask, False
            box = torch.ones(size, size, dtype=torch.bool)
        else:
            view_b, student_b = _view(pools[partner.pool][partner.index], partner, seed, size, strong)
            label_b, mask_b, need_b = _label_of(view_b, size)
            box = cutmix_box(size, size, make_generator(seed, _BOX, entry.position), p=cutmix_p)
            # cutmix_box marks the pasted region; our convention: True = own image a, so the
            # pasted rectangle comes from the partner b.
            box = ~box
            student = mix(student, student_b, box)
        pairs = view.pairs if view.pairs is not None else torch.zeros(0, 5, dtype=torch.long)
        for k, v in (("images", student), ("labels", label), ("masks", mask), ("labels_b", label_b),
                     ("masks_b", mask_b), ("box", box), ("pairs", pairs), ("pseudo", entry.pool == "pseudo"),
                     ("clean", view.image), ("clean_b", view_b.image), ("need_teacher", need),
                     ("need_teacher_b", need_b)):
            cols[k].append(v)
    p_max = max([1] + [len(p) for p in cols["pairs"]])
    cols["pairs"] = [torch.cat([p.long(), torch.zeros(p_max - len(p), 5, dtype=torch.long)]) for p in cols["pairs"]]
    return Batch(**{k: (torch.tensor(v) if isinstance(v[0], bool) else torch.stack(v)) for k, v in cols.items()})
