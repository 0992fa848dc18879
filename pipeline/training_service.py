"""The training service: what the studio's train tab (and its API) calls. No gradio here.

`TrainingService(store, settings, depth)` composes
- the `train` command (pipeline/cli/train.py): a `RunSettings` form -> a validated `TrainConfig`
  -> the command line, started as a background job (pipeline.jobs: one GPU job at a time, the
  rest queued; the job runs outside the web server and survives a studio restart);
- progress of the runs (`runs`, `status`), their loss curves (`curves`, from the job metrics of
  the run and of the runs it was resumed from), cancel and resume (`--resume` continues from the
  run folder's last checkpoint);
- the trained checkpoints of the label store (`checkpoints`); a finished run that the train
  command could not register is registered here (`sync_checkpoints`), so it reaches the model picker;
- teacher vs student on the held-out images' independent evidence: ground truth, pixels a person set,
  point pairs; never a model's pseudo-label (pipeline/holdout_compare.py); the figure stored on a
  trained checkpoint names what it was measured against.

Runs live in `<data folder>/runs/<name>/`; the run name is the trained model's id.
Several GPUs (and no single device pinned): a run starts as one DDP process per GPU through the jobs
module's torchrun launcher (`launcher`); a resume reuses the launcher the run started with.
Held-out share (`RunSettings.holdout`, the tab's teacher-vs-student share): the run leaves those
store images out of training (`train --holdout`), so the comparison scores images it never saw.
"""
from __future__ import annotations

import os
import re
import shlex
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from . import jobs
from .config import PATCH_SIZE
from .errors import ConfigError, StudioError
from .jobs import JobInfo
from .preprocess import MAX_INPUT_SIZE
from .ranges import MAX_ID, Range
from .settings import StudioSettings
from .store import Store
from .train import state as train_state
from .train.errors import ResumeError

JOB_KIND = "train"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURVE_SKIP = ("lr", "images_per_s", "eta_s", "throughput")     # job metrics that are not losses
# Every number the train endpoints take, checked here whatever the widget allowed (pipeline/ranges.py).
RANGES = {
    "steps": Range("steps", 1, 1_000_000, integer=True),
    "batch_size": Range("batch size", 1, 256, integer=True),
    "lr_encoder": Range("encoder learning rate", 1e-9, 1.0),
    "decoder_lr_mult": Range("decoder learning-rate multiplier", 1e-3, 1e4),
    "input_size": Range("crop size", PATCH_SIZE, MAX_INPUT_SIZE, integer=True, multiple_of=PATCH_SIZE),
    "save_every": Range("checkpoint interval (steps)", 1, 1_000_000, integer=True),
    "holdout": Range("held-out share", 0.0, 0.999999),                 # TrainConfig: [0, 1)
    "fraction": Range("held-out share", 0.01, 1.0),
    "max_images": Range("max images", 1, 50, integer=True),
    "compare_size": Range("input size", PATCH_SIZE, MAX_INPUT_SIZE, integer=True, multiple_of=PATCH_SIZE,
                          optional=True),
    "job_id": Range("job id", 1, MAX_ID, integer=True),
}

RANDOM_INIT = "random"                                          # RunSettings.init: no pretrained weights


class TrainingServiceError(StudioError):
    """A training request that cannot be carried out (unknown run, folder outside the allowed root, ...)."""


@dataclass(frozen=True)
class RunSettings:
    """The train tab's form. Defaults follow the published recipe (TrainConfig)."""

    name: str = ""                     # run folder and model id; "" = student-<date>-<time>
    init: str = ""                     # "" = DINOv2 encoder + new decoder (the paper's student), "random",
                                       # or a depth-service model key to fine-tune
    encoder: str = "vits"
    steps: int = 1000
    batch_size: int = 4
    lr_encoder: float = 5e-6
    decoder_lr_mult: float = 10.0
    ratio: str = "1:2"                 # labelled : pseudo-labelled images per batch
    input_size: int = 518              # crop size (multiple of 14)
    feature_alignment: bool = True
    feature_target: str = "dinov2"     # "dinov2" (the paper's) or "init" (the student's initial encoder)
    folder: str = ""                   # image / ground-truth pairs under the allowed root; "" = store only
    gt_kind: str = "depth"             # what the folder's ground truth holds
    save_every: int = 500
    holdout: float = 0.0               # share of the store's images held out of training (by image hash)

    @classmethod
    def from_dict(cls, d: dict) -> RunSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    try:
        import torch
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:   # noqa: BLE001 - a broken CUDA install counts as none
        return 0


def run_name_of(info: JobInfo) -> str:
    return str(info.params.get("run") or f"job-{info.id}")


def _option_of() -> dict[str, str]:
    """TrainConfig field -> the train command's option (pipeline/cli/train.py owns the mapping)."""
    from .cli.train import FIELDS
    return {field: "--" + opt.replace("_", "-") for opt, field in FIELDS.items()}


def config_argv(cfg) -> list[str]:
    """A TrainConfig -> the train command's options for every setting it has (except --db: jobs add it)."""
    argv = ["train"]
    for field, option in _option_of().items():
        value = getattr(cfg, field)
        if field == "db" or value is None:
            continue
        if isinstance(value, bool):
            argv.append(option if value else "--no-" + option[2:])
            continue
        if field == "labelled_ratio":
            value = f"{value[0]}:{value[1]}"
        elif field == "blur_sigma":
            value = f"{value[0]},{value[1]}"
        argv += [option, str(value)]
    if not cfg.amp:
        argv.append("--no-amp")
    return argv


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
        self.store = store
        self.settings = settings
        self.depth = depth                                   # pipeline.depth_service.DepthService
        self.db_path = Path(store.path)
        self.runs_dir = settings.runs_dir
        self.data_root = Path(data_root).expanduser().resolve() if data_root else settings.allowed_import_root
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.device = device if device is not None else settings.device
        self.threads = threads
        self._gpus = gpus
        self._register_lock = threading.Lock()

    # ---- the form ----------------------------------------------------------------------
    def init_choices(self) -> list[tuple[str, str]]:
        """(label, key) of what a run can start from: DINOv2 (the paper's student), random, then
        fine-tuning a relative-depth model."""
        out = [("DINOv2 encoder, new decoder (the paper's student; DINOv2 weights from the Hugging Face cache)", ""),
               ("random initialisation (experiments)", RANDOM_INIT)]
        if self.depth is not None:
            out += [(f"fine-tune {c.label}", c.key) for c in self.depth.choices() if not (c.config and c.config.metric)]
        return out

    def default_init(self) -> str:
        """The tab's default: fine-tune the studio's default model (what most users want) when it is a
        relative model, else the paper's DINOv2 start."""
        keys = [k for _, k in self.init_choices()]
        default = self.depth.default_key if self.depth is not None else ""
        return default if default in keys else ""

    def data_summary(self) -> dict:
        """How many curated labels the store would give a run, by status."""
        counts = self.store.count_by_status()
        return {"accepted": counts.get("accepted", 0), "corrected": counts.get("corrected", 0),
                "data_root": str(self.data_root)}

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

    def _init_source(self, key: str, encoder: str) -> str | None:
        if not key or key == RANDOM_INIT:
            return None
        if self.depth is None:
            return key
        choice = self.depth.choice(key)
        if choice.config is None:                        # a local file: its weights tell (cached load)
            loaded = self.depth.model(key)
            choice = replace(choice, config=None if loaded.untrained else loaded.checkpoint.config)
        if choice.config is not None and choice.config.metric:
            raise ConfigError(f"{choice.title} is a metric-depth model; training starts from relative models only")
        if choice.config is not None and choice.config.encoder != encoder:
            raise ConfigError(f"{choice.title} has a {choice.config.encoder} encoder but the run asks for {encoder}; "
                              f"choose encoder {choice.config.encoder} or another checkpoint")
        return choice.source

    def _data_folder(self, folder: str) -> str | None:
        if not (folder or "").strip():
            return None
        from .ingest import IngestError, resolve_under_root
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

    def train_config(self, run: RunSettings):
        """The validated TrainConfig of a form (ConfigError names the bad value)."""
        from .train.train_config import TrainConfig, parse_ratio
        run = replace(run, **{k: RANGES[k].check(getattr(run, k)) for k in (
            "steps", "batch_size", "lr_encoder", "decoder_lr_mult", "input_size", "save_every")},
            holdout=RANGES["holdout"].check(run.holdout or 0.0))
        name = self._run_name(run.name)
        return TrainConfig(
            out_dir=str(self.runs_dir / name), db=str(self.db_path), data_dir=self._data_folder(run.folder),
            gt_kind=run.gt_kind, encoder=run.encoder, init=self._init_source(run.init, run.encoder),
            student_init="random" if run.init == RANDOM_INIT else ("checkpoint" if run.init else "dinov2"),
            feature_alignment=bool(run.feature_alignment), feature_target=run.feature_target,
            steps=int(run.steps), batch_size=int(run.batch_size), lr_encoder=float(run.lr_encoder),
            decoder_lr_mult=float(run.decoder_lr_mult), input_size=int(run.input_size),
            labelled_ratio=parse_ratio(run.ratio),
            save_every=int(run.save_every), device=self.device or None, holdout=float(run.holdout or 0.0))

    def command_line(self, cfg) -> str:
        """What a person would type for the same run (torchrun when several GPUs are used)."""
        argv = config_argv(cfg) + ["--db", str(self.db_path)]
        head = (["torchrun", f"--nproc-per-node={self.processes}", "-m", "pipeline"] if self.processes > 1
                else ["python", "-m", "pipeline"])
        return shlex.join(head + argv)

    # ---- jobs --------------------------------------------------------------------------
    def start(self, run: RunSettings, *, author: str = "studio") -> int:
        """Start (or queue behind the running GPU job) a training run; returns its job id."""
        cfg = self.train_config(run)
        if not cfg.data_dir and not self._trainable(cfg.holdout):
            held = f" outside the held-out {cfg.holdout:.0%}" if cfg.holdout else ""
            raise TrainingServiceError(f"nothing to train on: the label store has no accepted or corrected labels{held} "
                                       "and no folder was given; accept some labels in the Curate tab"
                                       f"{', lower the held-out share' if held else ''} or give a folder "
                                       f"of image / ground-truth pairs under {self.data_root}")
        argv = config_argv(cfg) + self._process_args()
        Path(cfg.out_dir).parent.mkdir(parents=True, exist_ok=True)
        params = {"run": Path(cfg.out_dir).name, "out_dir": cfg.out_dir, "settings": asdict(run),
                  "command_line": self.command_line(cfg), "processes": self.processes}
        return jobs.start_job(self.db_path, JOB_KIND, argv, params=params, author=author,
                              env=self._env(), gpu=True, launcher=self.launcher())

    def _trainable(self, holdout: float) -> int:
        """Curated store images a run would train on (those outside the held-out split)."""
        from .train.train_config import in_holdout
        items = self.store.training_items(("accepted", "corrected"))
        if not holdout:
            return len(items)
        return sum(not in_holdout(self.store.get_image(t.image_id).sha256, holdout) for t in items)

    def _process_args(self) -> list[str]:
        return ["--threads", str(self.threads)] if self.threads else []

    def _env(self) -> dict:
        return {"OMP_NUM_THREADS": str(self.threads)} if self.threads else {}

    def runs(self, limit: int = 50) -> list[JobInfo]:
        """The training jobs, newest first (crashed ones are marked failed on the way)."""
        return jobs.list_jobs(self.db_path, kind=JOB_KIND, limit=limit)

    def status(self, job_id: int) -> JobInfo:
        job_id = RANGES["job_id"].check(job_id)
        info = jobs.job_status(self.db_path, job_id)
        if info.kind != JOB_KIND:
            raise TrainingServiceError(f"job {job_id} is a {info.kind} job, not a training run")
        if info.finished:
            self.sync_checkpoints()
        return info

    def cancel(self, job_id: int, *, author: str = "studio") -> JobInfo:
        """Queued: cancelled at once. Running: the run saves a checkpoint and stops (resumable)."""
        info = self.status(job_id)
        return jobs.cancel_job(self.db_path, info.id, author=author)

    def resume(self, job_id: int, *, author: str = "studio") -> int:
        """A new job continuing a failed / cancelled run from its last checkpoint; returns its id."""
        info = self.status(job_id)
        if info.status not in ("failed", "cancelled"):
            raise TrainingServiceError(f"run {run_name_of(info)} (job {info.id}) is {info.status}; only failed or "
                                       f"cancelled runs can be resumed")
        out = Path(info.params.get("out_dir") or "")
        argv = list(info.argv)
        if (out / "train_state.pt").is_file() and (out / "train_config.json").is_file():
            if "--resume" not in argv:
                argv.append("--resume")
        else:
            argv = [a for a in argv if a != "--resume"]       # nothing saved yet: start it again
        params = {k: v for k, v in info.params.items() if k not in ("gpu", "env", "launcher")}
        params["resumed_from"] = info.id
        return jobs.start_job(self.db_path, JOB_KIND, argv, params=params, author=author,
                              env=info.params.get("env") or {}, gpu=True, launcher=info.params.get("launcher"))

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
        for info in self.chain(job_id):
            rows = [r for r in jobs.job_metrics(self.db_path, info.id) if r[1] not in CURVE_SKIP]
            if not rows:
                continue
            first = min(step for step, _, _ in rows)
            points = {k: v for k, v in points.items() if k[1] < first}
            for step, name, value in rows:
                points[(name, int(step))] = float(value)
        chain = self.chain(job_id)
        for row in _run_metrics(Path(chain[-1].params.get("out_dir") or "")) if chain else []:
            for name, value in row.items():          # the run folder logs every step (the store is throttled)
                if name not in CURVE_SKIP and name != "step" and isinstance(value, (int, float)):
                    points[(name, int(row["step"]))] = float(value)
        return [{"step": s, "value": v, "series": n} for (n, s), v in sorted(points.items(), key=lambda kv: kv[0][1])]

    # ---- checkpoints -------------------------------------------------------------------
    def sync_checkpoints(self) -> list[int]:
        """Register the final checkpoint of every finished run the store does not list yet."""
        added = []
        with self._register_lock:
            known = {str(Path(c.path).resolve()) for c in self.store.list_checkpoints()}
            for info in jobs.list_jobs(self.db_path, kind=JOB_KIND, limit=200):
                final = Path(info.params.get("out_dir") or "") / train_state.FINAL_FILE
                if not final.is_file() or str(final.resolve()) in known:     # final = training finished
                    continue
                added.append(self._register(info, final).id)
                known.add(str(final.resolve()))
        return added

    def _register(self, info: JobInfo, final: Path):
        import json

        from .config import ModelConfig
        saved = Path(final.parent / "train_config.json")
        cfg = json.loads(saved.read_text()) if saved.is_file() else {}
        config = ModelConfig(encoder=cfg.get("encoder", "vits"), version=cfg.get("version", "v2")).to_dict()
        metrics = {k: v for k, v in info.metrics.items() if k not in ("eta_s",)}
        metrics["step"] = info.step
        return self.store.register_checkpoint(str(final), run_name_of(info), config, metrics=metrics,
                                              job_id=info.id, note="registered by the studio after the run finished")

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
                         "step": m.get("step", m.get("steps")), "loss": m.get("last_loss", m.get("loss")),
                         "abs_rel": e.get("abs_rel"), "delta1": e.get("delta1"), "against": e.get("against"),
                         "beats_baselines": e.get("beats_baselines"), "evaluation": e,
                         "job": c.job_id, "created": c.created_at, "path": c.path})
        return rows

    # ---- teacher vs student ------------------------------------------------------------
    def compare(self, teacher: str, student: str, *, fraction: float = 0.1, max_images: int = 8,
                input_size: int | None = None, sample: bool = False, progress=None):
        """Both models on the held-out images' independent evidence (or the Middlebury sample) ->
        holdout_compare.Comparison. Bounded: at most `max_images` (<= 50) images with evidence, in
        image-id order, run inside the call. Nothing independent: a Comparison without rows whose
        `message` says so (no number is made up)."""
        from . import holdout_compare as hc
        if self.depth is None:
            raise TrainingServiceError("no models are loaded in this studio; start it with the depth service")
        if not teacher or not student:
            raise ConfigError("choose a teacher and a student model to compare")
        max_images = RANGES["max_images"].check(max_images)
        input_size = RANGES["compare_size"].check(input_size)
        if not sample:
            fraction = RANGES["fraction"].check(fraction)
        if sample:
            items, skipped, held = hc.sample_items(), [], 1
        else:
            items, skipped_raw = hc.evidence_items(self.store, fraction)
            held, skipped = len(items) + len(skipped_raw), hc.skipped_lines(skipped_raw)
            if not held:
                skipped.append(f"no image of the store falls in the held-out {fraction:.0%}; raise the held-out share")
            if len(items) > max_images:
                skipped.append(f"{len(items) - max_images} image(s) with evidence beyond max images ({max_images})")
        roles = {"teacher": teacher, "student": student}
        titles = {r: self.depth.choice(k).title for r, k in roles.items()}
        if not items:
            return hc.Comparison(titles, [], {}, {}, held_out=held, skipped=skipped)
        result = hc.compare(items[:max_images], {r: self._predictor(k, input_size) for r, k in roles.items()},
                            titles, out_dir=self._compare_folder(), cmap=self.settings.cmap, held_out=held,
                            skipped=skipped, seen={r: self._trained_on(k) for r, k in roles.items()},
                            progress=progress)
        if not sample:
            self._record_evaluation(roles, titles, result, fraction)
        return result

    def _predictor(self, key: str, input_size: int | None):
        def predict(rgb):
            p = self.depth.infer(rgb, key, input_size)
            return p.array, p.kind
        return predict

    def _trained_on(self, key: str) -> set[str]:
        """Store image ids in a trained model's data snapshot (empty for other models), less the images
        its meta says were held out of training (train --holdout, by image hash)."""
        from .train.train_config import in_holdout
        meta = self.depth.model(key).checkpoint.meta or {}
        items = (meta.get("data") or {}).get("items") or []
        ids = {str(r.get("image_id")) for r in items
               if isinstance(r, dict) and r.get("source") in ("store", "store-ground-truth")}
        held = float(meta.get("holdout") or (meta.get("train_config") or {}).get("holdout") or 0.0)
        if held > 0:
            ids = {i for i in ids if not (i.isdigit() and self._image_in_holdout(int(i), held, in_holdout))}
        return ids

    def _image_in_holdout(self, image_id: int, fraction: float, rule) -> bool:
        try:
            return rule(self.store.get_image(image_id).sha256, fraction)
        except LookupError:                                  # deleted since the run: not shown anyway
            return False

    def _record_evaluation(self, roles: dict, titles: dict, result, fraction: float) -> None:
        """Store each trained checkpoint's figure with what it was measured against (the checkpoint
        table shows it); earlier circular figures ("holdout_abs_rel") are cleared."""
        from .holdout_compare import checkpoint_figure
        for role, key in roles.items():
            figure = checkpoint_figure(result, role, titles["student" if role == "teacher" else "teacher"], fraction)
            if key.startswith("trained:") and figure is not None:
                self.store.update_checkpoint_metrics(int(key.split(":", 1)[1]), {
                    "holdout_abs_rel": None, "holdout_delta1": None, "evaluation": figure})

    def _compare_folder(self) -> Path:
        import uuid
        folder = self.settings.temp_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder
