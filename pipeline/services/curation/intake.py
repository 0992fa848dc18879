"""Getting images and labels in and out: imports (browser uploads, server folders under the allowed
root, ground truth), pseudo-labelling as a background job, and the export of the curated set."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...intake import dataset_export
from ...intake import images as ingest
from ...intake.video import check_rate
from ...jobs import manager as jobs
from .common import RANGES, Base, CurationError, check_id

PSEUDO_LABEL = "pseudo_label"


@dataclass
class ExportResult:
    report: dataset_export.ExportReport
    zip_path: Path
    statuses: tuple[str, ...] = field(default_factory=tuple)


class Intake(Base):
    # ---- import ----------------------------------------------------------------------------
    def import_uploads(self, files, *, author: str = "studio", video_rate: float | None = None,
                       progress=None) -> ingest.ImportReport:
        """Browser uploads: paths or (name, path | bytes); zips are opened; videos give `video_rate` frames/s."""
        if not files:
            raise CurationError("no files given: choose images, videos or a zip to upload first")
        return ingest.import_uploads(self.store, list(files), author=author, max_pixels=self.settings.max_pixels,
                                     video_rate=check_rate(video_rate), progress=progress)

    def import_folder(self, folder: str, *, author: str = "studio", video_rate: float | None = None,
                      progress=None) -> ingest.ImportReport:
        """Every file under `folder` (relative to, or inside, `import_root`)."""
        if not str(folder or "").strip():
            raise CurationError(f"type a folder under {self.import_root} first")
        return ingest.import_server_folder(self.store, folder.strip(), allowed_root=self.import_root,
                                           author=author, max_pixels=self.settings.max_pixels,
                                           video_rate=check_rate(video_rate), progress=progress)

    def import_ground_truth(self, folder: str, *, kind: str, source: str, scale: float = 1.0,
                            author: str = "studio"):
        """Images + measured depth / disparity from a folder under `import_root`, stored as ground truth
        beside the labels (pipeline/intake/ground_truth.py) -> GroundTruthReport."""
        from ...intake.ground_truth import import_server_ground_truth
        if not str(folder or "").strip():
            raise CurationError(f"type a folder under {self.import_root} holding images with same-named ground truth")
        if not str(source or "").strip():
            raise CurationError("name the source of the measurements (e.g. lidar-2025, middlebury)")
        return import_server_ground_truth(self.store, folder.strip(), allowed_root=self.import_root, kind=kind,
                                          source=source.strip(), scale=RANGES["gt_scale"].check(scale) or 1.0,
                                          author=author, max_pixels=self.settings.max_pixels)

    # ---- pseudo-labelling jobs -------------------------------------------------------------
    def start_pseudo_label(self, checkpoint: str, *, model_id: str | None = None, input_size: int | None = None,
                           author: str = "studio") -> int:
        """Queue/start `python -m pipeline pseudo-label --checkpoint ...` as a background job."""
        if not checkpoint:
            raise CurationError("pick a teacher model first")
        argv = ["pseudo-label", "--checkpoint", str(checkpoint)]
        argv += ["--model-id", model_id] if model_id else []
        argv += ["--input-size", str(int(input_size))] if input_size else []
        argv += ["--device", self.settings.device] if self.settings.device else []
        return jobs.start_job(self.db_path, PSEUDO_LABEL, argv, author=author)

    def job(self, job_id: int | None = None) -> jobs.JobInfo | None:
        """A job's status; with None the newest pseudo-label job (None when there is none)."""
        if job_id is not None:
            return jobs.job_status(self.db_path, check_id("job_id", job_id))
        latest = jobs.list_jobs(self.db_path, kind=PSEUDO_LABEL, limit=1)
        return latest[0] if latest else None

    def cancel_job(self, job_id: int, *, author: str = "studio") -> jobs.JobInfo:
        return jobs.cancel_job(self.db_path, check_id("job_id", job_id), author=author)

    def resume_job(self, job_id: int, *, author: str = "studio") -> int:
        return jobs.resume_job(self.db_path, check_id("job_id", job_id), author=author)

    # ---- export ----------------------------------------------------------------------------
    def export(self, statuses=dataset_export.DEFAULT_STATUSES, *, progress=None) -> ExportResult:
        """Export to <data>/exports/export-<time>/ and zip it beside (what the download offers).
        NothingToExport (nothing written) when no image has those statuses, saying what the store holds."""
        base = self.settings.exports_dir
        name = f"export-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 1000:03d}{time.time_ns() % 1000:03d}"
        report = dataset_export.export_dataset(self.store, base / name, statuses=statuses, progress=progress)
        zip_path = Path(shutil.make_archive(str(base / name), "zip", root_dir=base, base_dir=name))
        return ExportResult(report, zip_path, tuple(statuses) if not isinstance(statuses, str) else (statuses,))
