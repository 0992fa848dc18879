"""The training service: what the studio's train tab (and its API) calls. No gradio here.

`TrainingService(store, settings, depth)` composes
- starting a run: the tab's form, a dict of TrainConfig settings by name plus the run name, where
  it starts from and an optional folder (pipeline/services/training_form.py) -> one validated TrainConfig,
  written as the run folder's settings file and run as `python -m pipeline train --config FILE` in
  a background job (pipeline.jobs.manager: one GPU job at a time, the rest queued; the job runs outside the
  web server and survives a studio restart);
- progress of the runs (`runs`, `status`), their loss curves (`curves`, from the job metrics of
  the run and of the runs it was resumed from), cancel, and resume: on the same data (`--resume`);
  when the labels changed since, the page offers continuing on the run's data snapshot
  (`resume(..., keep_data=True)`) or a new run from its last checkpoint on the new data (`restart`);
- the trained checkpoints of the label store (`checkpoints`), registered once when a run ends (by
  the run itself, pipeline/train/registration.py) and at studio start for runs that ended while it
  was down (`startup`); reading (status, runs, checkpoints) never writes;
- teacher vs student on the held-out images' independent evidence (pipeline/services/training_compare.py).

Runs live in `<data folder>/runs/<name>/` (pipeline/train/run_folder.py); the run name is the model id.
Several GPUs (and no single device pinned): a run starts as one DDP process per GPU through the jobs
module's torchrun launcher (`launcher`); a resume reuses the launcher the run started with.
"""
from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, StudioError
from ..jobs import manager as jobs
from ..jobs.manager import JobInfo
from ..ranges import MAX_ID, Range
from ..settings import StudioSettings
from ..store import Store
from ..train import state as train_state
from ..train.errors import ResumeError
from ..train.run_folder import RunFolder
from ..train.train_config import TrainConfig
from . import training_form as form_

JOB_KIND = "train"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURVE_SKIP = ("lr", "images_per_s", "eta_s", "throughput")     # job metrics that are not losses
RANGES = {"job_id": Range("job id", 1, MAX_ID, integer=True)}  # training settings: TrainConfig's ranges


class TrainingServiceError(StudioError):
    """A training request that cannot be carried out (unknown run, folder outside the allowed root, ...)."""


@dataclass(frozen=True)
class ResumePlan:
    """What resuming a stopped run would do: continue, or (data changed) a choice for the page."""

    info: JobInfo
    run: RunFolder
    checkpoint: Path | None          # the newest checkpoint (None: nothing saved, it starts again)
    step: int                        # its step
    data_changed: bool               # the run's data snapshot differs from what the store holds now
    then: int = 0                    # items in the snapshot
    now: int = 0                     # items the settings give now


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    try:
        import torch
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:   # noqa: BLE001 - a broken CUDA install counts as none
        return 0


def run_name_of(info: JobInfo) -> str:
    return str(info.params.get("run") or f"job-{info.id}")


def _run_metrics(out_dir: Path) -> list[dict]:
    """The run folder's metrics rows (pipeline.train.state owns the file; a line being written is skipped)."""
    try:
        rows = train_state.read_metrics(out_dir)
    except ResumeError:                                 # damaged mid-file: the page shows no curve, not an error
        return []
    return [row for row in rows if isinstance(row.get("step"), int)]


class TrainingService:
    def __init__(self, store: Store, settings: StudioSettings, depth=None, *,
                 data_root: str | os.PathLike | None = None, device: str | None = None,
                 threads: int | None = None, gpus: int | None = None):
        from .training_compare import TeacherStudent
        self.store = store
        self.settings = settings
        self.depth = depth                                   # pipeline.services.depth_service.DepthService
        self.db_path = Path(store.path)
        self.runs_dir = settings.runs_dir
        self.data_root = Path(data_root).expanduser().resolve() if data_root else settings.allowed_import_root
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.device = device if device is not None else settings.device
        self.threads = threads
        self._gpus = gpus
        self.teacher_student = TeacherStudent(store, settings, depth)

    # ---- the form ----------------------------------------------------------------------
    def start_choices(self) -> list[tuple[str, str]]:
        return form_.start_choices(self.depth)

    def default_start(self) -> str:
        return form_.default_start(self.depth)

    def start_encoder(self, key: str | None) -> str | None:
        return form_.start_encoder(self.depth, key)

    def start_max_depth(self, key: str | None) -> float | None:
        """A metric start model's max depth in metres (None: DINOv2, random or a relative model)."""
        config = form_.model_config(self.depth, key) if self.depth is not None and form_.is_model_key(key) else None
        return config.max_depth if config is not None and config.metric else None

    def describe_start(self, key: str | None, encoder: str | None = None, **settings) -> str:
        return form_.describe_start(self.depth, key, encoder, **settings)

    def data_summary(self) -> dict:
        return form_.data_summary(self.store, self.data_root)

    @property
    def gpus(self) -> int:
        if self._gpus is None:
            self._gpus = gpu_count()
        return self._gpus

    @property
    def processes(self) -> int:
        """Processes a run starts: one per GPU when several are present and no single device is pinned."""
        pinned = (self.device or "").strip() not in ("", "auto", "cuda")
        return self.gpus if self.gpus > 1 and not pinned else 1

    def launcher(self) -> list[str] | None:
        """The jobs launcher for a new run: torchrun with one process per GPU, or None (one process)."""
        return jobs.torchrun(self.processes) if self.processes > 1 else None

    def launch_note(self) -> str:
        n = self.gpus
        if self.processes > 1:
            return f"{n} GPUs present: a run uses all {n} (torchrun, one process per GPU)"
        if n > 1:
            return f"{n} GPUs present, device {self.device} chosen: a run uses that one"
        return "one GPU" if n == 1 else "CPU only (no GPU found): keep runs small"

    def _start(self, key: str | None, encoder: str, metric: bool) -> tuple[str, str | None]:
        """(student_init, init) of a start choice; a model's encoder and kind must fit the run."""
        if not form_.is_model_key(key):
            return (key or form_.START_DINOV2), None
        if self.depth is None:
            return "checkpoint", key
        choice, config = self.depth.choice(key), form_.model_config(self.depth, key)
        if config is not None and config.metric and not metric:
            raise ConfigError(f"{choice.title} is a metric-depth model; tick 'metric depth' to fine-tune it, "
                              "or start from a relative model")
        if config is not None and config.encoder != encoder:
            raise ConfigError(f"{choice.title} has a {config.encoder} encoder but the run asks for {encoder}; "
                              f"choose encoder {config.encoder} or another checkpoint")
        return "checkpoint", choice.source

    def _data_folder(self, folder: str) -> str | None:
        if not (folder or "").strip():
            return None
        from ..intake.images import IngestError, resolve_under_root
        try:
            resolved, _root = resolve_under_root(folder.strip(), self.data_root)
        except IngestError as e:
            raise TrainingServiceError(f"{e} (a folder of images with same-named ground truth)") from None
        return str(resolved)

    def _run_name(self, name: str) -> str:
        name = (name or "").strip() or time.strftime("student-%Y%m%d-%H%M%S")
        if not RUN_NAME.match(name):
            raise ConfigError(f"run name {name!r}: use letters, digits, '-', '_' or '.', at most 64 characters")
        if (self.runs_dir / name).exists():
            raise ConfigError(f"a run named {name!r} already exists; choose another name "
                              f"(or resume that run from the list)")
        return name

    def train_config(self, form: dict) -> TrainConfig:
        """The validated TrainConfig of a form dict (ConfigError names the bad value). Settings left
        out (or None / "") take TrainConfig's defaults; unknown names and the studio's own are refused."""
        values = {k: v for k, v in dict(form or {}).items() if v is not None and v != ""}
        name = self._run_name(str(values.pop("name", "")))
        start, folder = values.pop("init", None), str(values.pop("folder", ""))
        owned = sorted(set(values) & form_.service_owned())
        if owned:
            raise ConfigError(f"{', '.join(owned)}: set by the studio, not by the form")
        encoder = values.get("encoder", form_.DEFAULTS["encoder"])
        student_init, init = self._start(start, encoder, bool(values.get("metric", False)))
        return TrainConfig.from_dict({**values, "out_dir": str(self.runs_dir / name), "db": str(self.db_path),
                                      "data_dir": self._data_folder(folder), "student_init": student_init,
                                      "init": init, "device": self.device or None})

    def command_line(self, config_file: str | os.PathLike) -> str:
        """What a person would type for the same run (torchrun when several GPUs are used)."""
        head = (["torchrun", f"--nproc-per-node={self.processes}", "-m", "pipeline"] if self.processes > 1
                else ["python", "-m", "pipeline"])
        return shlex.join(head + ["train", "--config", str(config_file), "--db", str(self.db_path)])

    # ---- jobs --------------------------------------------------------------------------
    def start(self, form: dict, *, author: str = "studio") -> int:
        """Start (or queue behind the running GPU job) a training run; returns its job id."""
        cfg = self.train_config(form)
        self._check_data(cfg)
        return self._launch(cfg, author)

    def _check_data(self, cfg: TrainConfig) -> None:
        if cfg.data_dir:
            return
        from ..train.store_source import store_items
        if store_items(cfg.db, cfg.holdout, cfg.train_on_ground_truth, cfg.metric):
            return
        held = f" outside the held-out {cfg.holdout:.0%}" if cfg.holdout else ""
        labels = "labels in metres (a metric model's, or calibrated)" if cfg.metric else "accepted or corrected labels"
        raise TrainingServiceError(f"nothing to train on: the label store has no {labels}{held} "
                                   "and no folder was given; accept some labels in the Curate tab"
                                   f"{', lower the held-out share' if held else ''} or give a folder "
                                   f"of image / ground-truth pairs under {self.data_root}")

    def _launch(self, cfg: TrainConfig, author: str, **params) -> int:
        """Write the run's settings file and start `train --config FILE` as a job."""
        run = RunFolder(cfg.out_dir)
        config_file = run.write_config(cfg.to_dict())
        argv = ["train", "--config", str(config_file)] + (["--threads", str(self.threads)] if self.threads else [])
        params = {"run": run.name, "out_dir": cfg.out_dir, "command_line": self.command_line(config_file),
                  "processes": self.processes, "metric": cfg.metric, **params}
        env = {"OMP_NUM_THREADS": str(self.threads)} if self.threads else {}
        return jobs.start_job(self.db_path, JOB_KIND, argv, params=params, author=author, env=env, gpu=True,
                              launcher=self.launcher())

    def runs(self, limit: int = 50) -> list[JobInfo]:
        """The training jobs, newest first (reads only)."""
        return jobs.list_jobs(self.db_path, kind=JOB_KIND, limit=limit)

    def status(self, job_id: int) -> JobInfo:
        """One run's job (reads only: a finished run was registered by the run itself)."""
        job_id = RANGES["job_id"].check(job_id)
        info = jobs.job_status(self.db_path, job_id)
        if info.kind != JOB_KIND:
            raise TrainingServiceError(f"job {job_id} is a {info.kind} job, not a training run")
        return info

    def cancel(self, job_id: int, *, author: str = "studio") -> JobInfo:
        """Queued: cancelled at once. Running: the run saves a checkpoint and stops (resumable)."""
        info = self.status(job_id)
        return jobs.cancel_job(self.db_path, info.id, author=author)

    def _stopped(self, job_id: int) -> JobInfo:
        info = self.status(job_id)
        if info.status not in ("failed", "cancelled"):
            raise TrainingServiceError(f"run {run_name_of(info)} (job {info.id}) is {info.status}; only failed or "
                                       f"cancelled runs can be resumed")
        return info

    def resume_plan(self, job_id: int) -> ResumePlan:
        """What Resume would do for a failed / cancelled run: compares the data snapshot of its newest
        checkpoint with what its settings give now (ids, revisions and hashes; no label is read)."""
        from ..train.recipe import raw_items
        from ..weights.loading import project_metadata
        info = self._stopped(job_id)
        run = RunFolder(info.params.get("out_dir") or "")
        ckpt = run.latest_checkpoint() if run.resumable else None
        if ckpt is None:
            return ResumePlan(info, run, None, 0, False)
        meta = project_metadata(ckpt).get("meta") or {}
        then = [(r.get("source"), str(r.get("image_id")), r.get("revision_id"), r.get("sha256"))
                for r in (meta.get("data") or {}).get("items") or []]
        cfg = TrainConfig.from_dict(TrainConfig.saved_settings(run.read_config()))
        now = [(it.source, str(it.image_id), it.revision_id, it.sha256) for it in raw_items(cfg)]
        changed = sorted(map(repr, then)) != sorted(map(repr, now))
        return ResumePlan(info, run, ckpt, int(meta.get("step") or 0), changed, len(then), len(now))

    def resume(self, job_id: int, *, keep_data: bool = False, author: str = "studio") -> int:
        """A new job continuing a failed / cancelled run from its last checkpoint; returns its id.
        keep_data: on the data snapshot it started with (when the labels changed since)."""
        info = self._stopped(job_id)
        argv = [a for a in info.argv if a not in ("--resume", "--keep-data")]
        if RunFolder(info.params.get("out_dir") or "").resumable:
            argv += ["--resume"] + (["--keep-data"] if keep_data else [])
        params = {k: v for k, v in info.params.items() if k not in ("gpu", "env", "launcher")}
        params["resumed_from"] = info.id
        return jobs.start_job(self.db_path, JOB_KIND, argv, params=params, author=author,
                              env=info.params.get("env") or {}, gpu=True, launcher=info.params.get("launcher"))

    def restart(self, job_id: int, *, author: str = "studio") -> int:
        """A new run fine-tuning the stopped run's newest checkpoint on the data as it is now, with the
        run's settings otherwise; named <run>-from-step<N> (made unique). Returns its job id."""
        plan = self.resume_plan(job_id)
        if plan.checkpoint is None:
            raise TrainingServiceError(f"run {plan.run.name} saved no checkpoint yet; resume it to start it again")
        saved = TrainConfig.saved_settings(plan.run.read_config())
        base, n = f"{plan.run.name}-from-step{plan.step}", 1
        name = base
        while (self.runs_dir / name).exists():
            n += 1
            name = f"{base}-{n}"
        cfg = TrainConfig.from_dict({**saved, "out_dir": str(self.runs_dir / name), "init": str(plan.checkpoint),
                                     "student_init": "checkpoint", "encoder_init": None})
        self._check_data(cfg)
        return self._launch(cfg, author, restarted_from=plan.info.id)

    def chain(self, job_id: int) -> list[JobInfo]:
        """The run's jobs, oldest first: the job and the ones it was resumed from."""
        out, seen = [], set()
        current: int | None = int(job_id)
        while current is not None and current not in seen:
            seen.add(current)
            try:
                info = jobs.job_status(self.db_path, current)
            except jobs.JobError:
                break
            out.append(info)
            current = info.params.get("resumed_from")
        return out[::-1]

    def curves(self, job_id: int) -> list[dict]:
        """Loss curves of a run across its resumes: [{"step", "value", "series"}] sorted by step.

        A resumed job restarts from its checkpoint's step; its points replace the earlier job's
        points from that step on (those steps were trained again)."""
        points: dict[tuple[str, int], float] = {}
        chain = self.chain(job_id)
        for info in chain:
            rows = [r for r in jobs.job_metrics(self.db_path, info.id) if r[1] not in CURVE_SKIP]
            if not rows:
                continue
            first = min(step for step, _, _ in rows)
            points = {k: v for k, v in points.items() if k[1] < first}
            for step, name, value in rows:
                points[(name, int(step))] = float(value)
        for row in _run_metrics(Path(chain[-1].params.get("out_dir") or "")) if chain else []:
            for name, value in row.items():          # the run folder logs every step (the store is throttled)
                if name not in CURVE_SKIP and name != "step" and isinstance(value, (int, float)):
                    points[(name, int(row["step"]))] = float(value)
        return [{"step": s, "value": v, "series": n} for (n, s), v in sorted(points.items(), key=lambda kv: kv[0][1])]

    # ---- checkpoints -------------------------------------------------------------------
    def startup(self) -> list[int]:
        """At studio start: settle jobs whose process ended while the studio was down (the queue moves
        on), then register runs that finished meanwhile. Returns the checkpoint ids registered."""
        jobs.advance(self.db_path)
        return self.register_finished_runs()

    def register_finished_runs(self) -> list[int]:
        """Register the final checkpoint of every finished run the store does not list yet."""
        from ..train.registration import register_run
        known = {c.path for c in self.store.list_checkpoints()}
        added = []
        for info in jobs.list_jobs(self.db_path, kind=JOB_KIND, limit=1000):
            run = RunFolder(info.params.get("out_dir") or "")
            if run.name and run.finished and str(run.final.resolve()) not in known:
                added.append(register_run(self.store, run.path, job_id=info.id).id)
                known.add(str(run.final.resolve()))
        return added

    def checkpoints(self) -> list[dict]:
        """Trained checkpoints in the store, newest first, with their metrics (for a table). The
        evaluation figure is the last teacher-vs-student comparison against independent labels
        (`metrics["evaluation"]`, with what it was measured against); older figures scored against
        the teacher's own labels ("holdout_abs_rel") are not shown."""
        rows = []
        for c in self.store.list_checkpoints():
            m = c.metrics or {}
            e = m.get("evaluation") or {}
            rows.append({"id": c.id, "model": c.model_id, "key": f"trained:{c.id}", "encoder": c.config.get("encoder"),
                         "metric": bool(c.config.get("metric")), "max_depth": c.config.get("max_depth"),
                         "step": m.get("step"), "loss": m.get("last_loss"),
                         "abs_rel": e.get("abs_rel"), "abs_rel_median": e.get("abs_rel_median"),
                         "delta1": e.get("delta1"), "outliers": e.get("outliers") or [], "against": e.get("against"),
                         "beats_baselines": e.get("beats_baselines"), "evaluation": e,
                         "job": c.job_id, "created": c.created_at, "path": c.path})
        return rows

    # ---- teacher vs student ------------------------------------------------------------
    def compare(self, teacher: str, student: str, **kwargs):
        """pipeline/training_compare.TeacherStudent.compare (held-out evidence or the Middlebury sample)."""
        return self.teacher_student.compare(teacher, student, **kwargs)
