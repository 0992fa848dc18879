"""The teacher-student training recipe: setup, train loop, save, cleanup (read top to bottom).

    recipe = Recipe(cfg, reporter=reporter)   # reporter: pipeline.jobs.reporter.JobReporter or None
    result = recipe.run(resume=False)         # setup() -> train() -> cleanup()

setup   joins DDP (torchrun), gathers the data (store, folder and/or shards; `keep_data`: the snapshot the
        run started with), builds the student (metric runs: pipeline.train.metric_student), the
        frozen teacher and frozen DINOv2 (no grad), AdamW + schedule, the sampler; with `resume`
        restores weights, optimiser, scheduler, sampler and RNG states.
train   per optimiser step: `grad_accum` micro-batches; each draws the global batch
        (labelled : pseudo-labelled), builds this rank's share, lets the teacher label images
        without a stored label, runs the student (bf16 autocast on CUDA), back-propagates the
        objective (objective.py); then step, schedule, log, report, checkpoint every
        `save_every` steps. A stop request (SIGTERM, the job's cancel) saves and returns.
save    rank 0 writes the checkpoint (weights + TrainConfig + data snapshot) and then the
        training state, both atomically (state.py).
cleanup registers a finished run in the store (registration.register_run), leaves the process group.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..jobs.stop_signal import StopLatch
from ..model import DepthAnything
from ..preprocess import imagenet_normalize
from . import state as st
from .batches import Batch, MixedSampler, build_batch, local_entries, strong_perturbation
from .data import TrainItem, data_snapshot, folder_items, pools, unlabelled_items, validate_items
from .distributed import DistContext, any_rank, barrier, cleanup, init_distributed, max_divergence, wrap_ddp
from .errors import ResumeError, TrainDataError
from .objective import combine, per_sample_terms
from .run_folder import FINAL_FILE, RunFolder, step_checkpoint_name
from .schedule import build_optimizer, build_scheduler
from .student import StudentForward, build_frozen_dinov2, build_student, build_teacher, freeze_unused, frozen_features
from .train_config import TrainConfig


@dataclass
class TrainResult:
    status: str                          # "finished" | "stopped"
    step: int
    checkpoint: Path | None              # the last checkpoint written
    losses: list[float] = field(default_factory=list)   # total loss per step of this process's run


def raw_items(cfg: TrainConfig) -> list[TrainItem]:
    """Every item the settings name, before the check for usable label pixels (no label is read)."""
    items: list[TrainItem] = []
    if cfg.db:
        from .store_source import store_items
        items += store_items(cfg.db, cfg.holdout, cfg.train_on_ground_truth, cfg.metric)
    if cfg.data_dir:
        items += folder_items(cfg.data_dir, cfg.gt_kind, cfg.metric)
    if cfg.unlabelled_dir:
        items += unlabelled_items(cfg.unlabelled_dir)
    if cfg.shards:
        from .shard_source import shard_items
        items += shard_items(cfg.shards, holdout=cfg.holdout, min_confidence=cfg.shard_min_confidence)
    if not cfg.pseudo_labels:                       # V1 Table 9 row 1: labelled images only
        items = [it for it in items if it.pool == "labelled"]
    return items


def _empty(cfg: TrainConfig) -> TrainDataError:
    held = f" outside the held-out {cfg.holdout:.0%} (--holdout)" if cfg.holdout else ""
    if cfg.metric:
        return TrainDataError(f"the training set is empty: the store has no accepted labels in metres{held} and no "
                              "folder was given; a metric run needs metric ground truth (--data DIR with depth in "
                              "metres) or labels in metres (a metric model's, or calibrated ones)")
    return TrainDataError(f"the training set is empty: the store has no accepted labels{held} and no folder was "
                          f"given; accept some pseudo-labels{', lower --holdout' if held else ''} or pass --data DIR")


def gather_items(cfg: TrainConfig, dropped: list[dict] | None = None) -> list[TrainItem]:
    """The run's usable items; what data validation left out (and why) is appended to `dropped`."""
    items = raw_items(cfg)
    if not items:
        raise _empty(cfg)
    return validate_items(items, cfg.min_items, cfg.input_size, dropped)


def snapshot_gather(cfg: TrainConfig, rows: list[dict]) -> list[TrainItem]:
    """The items of a saved data snapshot: store rows from their revisions, folder rows by content hash."""
    from .store_source import STORE_SOURCES, snapshot_items
    wanted = {(r.get("source"), str(r.get("image_id")), r.get("sha256")) for r in rows}
    files = [it for it in raw_items(TrainConfig.from_dict({**cfg.to_dict(), "db": None}))
             if (it.source, str(it.image_id), it.sha256) in wanted] if (cfg.data_dir or cfg.unlabelled_dir or cfg.shards) else []
    stored = snapshot_items(cfg.db, rows, cfg.metric) if cfg.db else []
    missing = len([r for r in rows if r.get("source") not in STORE_SOURCES]) - len(files)
    if missing:
        raise TrainDataError(f"{missing} file(s) of the run's folder data changed or are gone; it cannot continue "
                             "on its data snapshot: start a new run from its checkpoint instead")
    return stored + files


class Recipe:
    def __init__(self, cfg: TrainConfig, *, reporter=None, should_stop=None, log=print, job_id: int | None = None,
                 keep_data: bool = False):
        self.cfg = cfg
        self.keep_data = keep_data
        self.job_id = job_id
        self.reporter = reporter
        self._external_stop = should_stop
        self._log = log
        self._signal_stop = StopLatch()          # re-entrant: a rank gets SIGTERM more than once
        self.out = Path(cfg.out_dir)
        self.run_folder = RunFolder(cfg.out_dir)
        self.step = 0
        self.last_checkpoint: str | None = None
        self.losses: list[float] = []

    # ------------------------------------------------------------------ setup
    def setup(self, resume: bool = False) -> None:
        cfg = self.cfg
        self.ctx: DistContext = init_distributed(cfg.device)
        torch.manual_seed(cfg.seed)
        self.dropped: list[dict] = []
        self.items = self._saved_items() if resume and self.keep_data else gather_items(cfg, self.dropped)
        for d in self.dropped:
            self.log(f"left out of training: {d['source']} image {d['image_id']}: {d['reason']}")
        self.pools = pools(self.items)
        self.snapshot = data_snapshot(self.items, self.dropped)
        if any(it.source == "unlabelled" for it in self.items) and not cfg.teacher:
            raise TrainDataError("some images have no label; pass --teacher CKPT to label them on the fly")

        if cfg.metric:
            from .metric_student import build_metric_student
            student, self.init_note = build_metric_student(cfg)
        else:
            student, self.init_note = build_student(cfg)
        self.student: DepthAnything = student.to(self.ctx.device)
        self.teacher = build_teacher(cfg)
        self.teacher = self.teacher.to(self.ctx.device) if self.teacher is not None else None
        self.dinov2, self.feature_note = None, "off"
        if cfg.uses_feature_alignment and self.pools["pseudo"]:
            dinov2, self.feature_note = build_frozen_dinov2(cfg, self.student)
            self.dinov2 = dinov2.to(self.ctx.device)
            if cfg.feature_target == "init" and cfg.student_init == "checkpoint":
                self.log("note: the feature target is the fine-tuned student's own initial encoder; its tokens start "
                         "above the alignment margin, so the feature term stays near 0 (use a DINOv2 target)")
        self.strong = strong_perturbation(cfg)
        forward = StudentForward(self.student)
        freeze_unused(forward)
        self.model = wrap_ddp(forward, self.ctx)

        self.optimizer = build_optimizer(self.student, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.sampler = MixedSampler(self.pools, cfg.labelled_ratio, cfg.seed)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if cfg.amp and self.ctx.device.type == "cuda" else nullcontext())
        if resume:
            self._load_state()
        elif self.ctx.is_main:
            self.run_folder.write_config(cfg.to_dict())
            self.run_folder.metrics.unlink(missing_ok=True)
        self._install_sigterm()
        self.log(f"feature alignment target: {self.feature_note}")
        what = (f"metric depth up to {cfg.max_depth:g} m, SiLog loss" if cfg.metric else
                f"{len(self.pools['pseudo'])} pseudo-labelled images")
        self.log(f"training {cfg.encoder} ({self.init_note}) on {len(self.pools['labelled'])} labelled + "
                 f"{what}, {cfg.steps} steps, global batch "
                 f"{cfg.batch_size * self.ctx.world_size * cfg.grad_accum}, device {self.ctx.device}, "
                 f"{self.ctx.world_size} process(es)")

    def _saved_items(self) -> list[TrainItem]:
        """--keep-data: the data snapshot of the run's last checkpoint (what it started on)."""
        from ..weights.loading import project_metadata
        s = st.read_state(self.out)
        rows = (project_metadata(self.run_folder.file(s["checkpoint"])).get("meta") or {}).get("data", {}).get("items")
        return validate_items(snapshot_gather(self.cfg, rows or []), self.cfg.min_items, self.cfg.input_size,
                              self.dropped)

    def _load_state(self) -> None:
        s = st.read_state(self.out)
        if s["data_sha256"] != self.snapshot["sha256"]:
            raise ResumeError(f"the training data changed since {s['checkpoint']} was written: continue on the data "
                              f"it started with (--resume --keep-data) or start a new run from that checkpoint on "
                              f"the new data (--init {self.out / s['checkpoint']})")
        if s["world_size"] != self.ctx.world_size:
            self.log(f"note: resuming with {self.ctx.world_size} processes; the run was saved with {s['world_size']}")
        from ..weights.loading import load_model
        loaded = load_model(self.out / s["checkpoint"], encoder=self.cfg.encoder)
        self.student.load_state_dict(loaded.model.state_dict())
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.sampler.load_state_dict(s["sampler"])
        st.restore_rng(s["rng"])
        self.step, self.last_checkpoint = int(s["step"]), s["checkpoint"]
        if self.ctx.is_main:
            st.truncate_metrics(self.out, self.step)
        self.log(f"resumed at step {self.step} from {s['checkpoint']}")

    def _install_sigterm(self) -> None:
        self._signal_stop.install()

    # ------------------------------------------------------------------ train
    def train(self) -> TrainResult:
        cfg, t0, done0 = self.cfg, time.perf_counter(), self.step
        while self.step < cfg.steps:
            if self._stop_requested():
                self.save()
                self.log(f"stopped at step {self.step}; continue with --resume")
                return TrainResult("stopped", self.step, self._ckpt_path(), self.losses)
            metrics = self.train_step()
            self.step += 1
            self.losses.append(metrics["loss"])
            self._report(metrics, t0, done0)
            if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save()
        self.rank_divergence = max_divergence(self.student, self.ctx)      # 0.0: every rank holds the same weights
        final = self.save(final=True)
        return TrainResult("finished", self.step, final, self.losses)

    def train_step(self) -> dict[str, float]:
        cfg, totals = self.cfg, {}
        self.model.train()
        for micro in range(cfg.grad_accum):
            batch = self._next_batch()
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if last or not self.ctx.enabled else self.model.no_sync()
            with sync:
                loss, logged = self.micro_step(batch)
                (loss / cfg.grad_accum).backward()
            for k, v in logged.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        totals["lr"] = self.scheduler.get_last_lr()[0]          # the encoder lr this step used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not all(map(lambda v: v == v, totals.values())):
            raise TrainDataError(f"the loss became NaN at step {self.step + 1}; a label may hold extreme values "
                                 f"or the learning rate is too high (lr_encoder={cfg.lr_encoder})")
        return totals

    def _next_batch(self) -> Batch:
        cfg = self.cfg
        entries = self.sampler.next_batch(cfg.batch_size * self.ctx.world_size)
        mine = local_entries(entries, self.ctx.rank, self.ctx.world_size)
        batch = build_batch(self.pools, mine, seed=cfg.seed, size=cfg.input_size, cutmix_p=self.strong.cutmix_p,
                            strong=self.strong)
        batch = batch.to(self.ctx.device)
        self._teacher_labels(batch)
        return batch

    @torch.no_grad()
    def _teacher_labels(self, b: Batch) -> None:
        """Frozen teacher labels the clean views of images that have no stored label."""
        for need, clean, labels, masks in ((b.need_teacher, b.clean, b.labels, b.masks),
                                           (b.need_teacher_b, b.clean_b, b.labels_b, b.masks_b)):
            if not bool(need.any()):
                continue
            with self.autocast:
                pred = self.teacher(imagenet_normalize(clean[need])).float()          # (n, S, S)
            labels[need] = pred
            masks[need] = torch.isfinite(pred)

    def micro_step(self, b: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        x = imagenet_normalize(b.images)                                               # (B, 3, S, S)
        with self.autocast:
            pred, feats = self.model(x)                                      # (B, S, S), (B, N, C)
        frozen = None
        if self.dinov2 is not None and bool(b.pseudo.any()):
            with self.autocast:
                frozen = frozen_features(self.dinov2, x)
        terms = per_sample_terms(pred.float(), feats, frozen, b, self.cfg)
        return combine(terms, self.cfg, self.ctx)

    def _stop_requested(self) -> bool:
        local = self._signal_stop.requested
        if self.ctx.is_main:
            if self._external_stop is not None and self._external_stop(self.step):
                local = True
            if self.reporter is not None and self.reporter.should_stop():
                local = True
        return any_rank(local, self.ctx)

    def _report(self, metrics: dict, t0: float, done0: int) -> None:
        if not self.ctx.is_main or (self.step % self.cfg.log_every and self.step != self.cfg.steps):
            return
        elapsed = time.perf_counter() - t0
        per_step = elapsed / max(1, self.step - done0)
        imgs = self.cfg.batch_size * self.ctx.world_size * self.cfg.grad_accum / max(per_step, 1e-9)
        row = {"step": self.step, **{k: (v if k == "lr" else round(v, 6)) for k, v in metrics.items()},
               "images_per_s": round(imgs, 3),
               "eta_s": round(per_step * (self.cfg.steps - self.step), 1)}
        st.append_metrics(self.out, row)
        if self.reporter is not None:
            # latest values + the loss-curve history (the reporter writes at most twice a second and
            # always at the last step; the run folder's metrics file holds every step)
            self.reporter.progress(self.step, self.cfg.steps, **{k: float(v) for k, v in row.items() if k != "step"})
        self.log(f"step {self.step}/{self.cfg.steps} loss {metrics['loss']:.4f} {imgs:.2f} img/s")

    # ------------------------------------------------------------------ save
    def _ckpt_path(self) -> Path | None:
        return self.out / self.last_checkpoint if self.last_checkpoint else None

    def meta(self) -> dict:
        return {"kind": "student", "step": self.step, "train_config": self.cfg.to_dict(), "init": self.init_note,
                "student_init": self.cfg.student_init, "feature_target": self.feature_note,
                "holdout": self.cfg.holdout,                  # store images with in_holdout(sha, this) were left out
                "data": self.snapshot, "last_loss": self.losses[-1] if self.losses else None,
                "world_size": self.ctx.world_size, "rank_weight_max_diff": getattr(self, "rank_divergence", None)}

    def save(self, final: bool = False) -> Path | None:
        """Rank 0: weights (atomic) then training state (atomic) naming them; all ranks wait."""
        path = None
        if self.ctx.is_main:
            name = FINAL_FILE if final else step_checkpoint_name(self.step)
            model_id = f"{Path(self.cfg.out_dir).name}-step{self.step}"
            path = st.write_checkpoint(self.student, self.out, name, model_id=model_id, meta=self.meta(),
                                       previous=self.last_checkpoint)
            st.write_state(self.out, self.training_state(name))
            previous, self.last_checkpoint = self.last_checkpoint, name
            step_ckpts = [p.relative_to(self.out).as_posix() for p in self.run_folder.step_checkpoints()]
            st.rotate(self.out, (step_ckpts + [name])[-st.KEEP:] + ([previous] if previous else []))
            self.log(f"saved {path}")
        barrier(self.ctx)
        return path

    def training_state(self, checkpoint_name: str) -> dict:
        return {"step": self.step, "checkpoint": checkpoint_name, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": st.capture_rng(), "data_sha256": self.snapshot["sha256"],
                "world_size": self.ctx.world_size, "config": self.cfg.to_dict()}

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, result: TrainResult | None = None) -> None:
        if result is not None and result.status == "finished" and self.cfg.db and self.ctx.is_main:
            self._register(result)
        self._signal_stop.restore()
        if hasattr(self, "ctx"):
            cleanup(self.ctx)

    def _register(self, result: TrainResult) -> None:
        from .registration import register_run
        from .store_source import open_store
        ckpt = register_run(open_store(self.cfg.db), self.out, job_id=self.job_id)
        self.log(f"registered {result.checkpoint} in {self.cfg.db} as {ckpt.model_id}")

    def run(self, resume: bool = False) -> TrainResult:
        result = None
        try:
            self.setup(resume)
            result = self.train()
            return result
        finally:
            self.cleanup(result)

    def log(self, line: str) -> None:
        if getattr(self, "ctx", None) is None or self.ctx.is_main:
            if self.reporter is not None:
                self.reporter.log(line)                          # the job's log and stdout
            else:
                self._log(line)


def train(cfg: TrainConfig, *, resume: bool = False, keep_data: bool = False, reporter=None, should_stop=None,
          log=print, job_id: int | None = None) -> TrainResult:
    """Run a whole training (see module docstring). Raises StudioError subclasses for user errors.
    `keep_data` (with resume): train on the data snapshot the run started with."""
    return Recipe(cfg, reporter=reporter, should_stop=should_stop, log=log, job_id=job_id,
                  keep_data=keep_data).run(resume)


__all__ = ["Recipe", "TrainResult", "train", "gather_items", "raw_items"]
