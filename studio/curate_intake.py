"""The Curate tab's intake handlers: imports (uploads, server folders, ground truth), the pseudo-label
job (start, poll, cancel, resume) and the export of the curated set."""
from __future__ import annotations

import gradio as gr

from .curate_image import author_of
from .curate_text import import_markdown, job_html
from .errors import refuse, user_errors
from .text import md


def _bar(progress, desc: str):
    """An iterable wrapper for pipeline functions that take `progress=` (tqdm-like): gr.Progress."""
    return lambda items: progress.tqdm(items, desc=desc)


class IntakeHandlers:
    def __init__(self, curation, depth=None):
        self.curation = curation
        self.depth = depth

    # ---- import ------------------------------------------------------------------------------
    @user_errors("Cannot import")
    def import_files(self, files, video_rate=None, request: gr.Request = None, progress=gr.Progress()) -> str:
        return import_markdown(self.curation.import_uploads(files or [], author=author_of(request),
                                                            video_rate=video_rate or None,
                                                            progress=_bar(progress, "importing")))

    @user_errors("Cannot import")
    def import_folder(self, folder, video_rate=None, request: gr.Request = None, progress=gr.Progress()) -> str:
        return import_markdown(self.curation.import_folder(folder or "", author=author_of(request),
                                                           video_rate=video_rate or None,
                                                           progress=_bar(progress, "importing")))

    @user_errors("Cannot import ground truth")
    def import_ground_truth(self, folder, kind, source, scale, request: gr.Request = None,
                            progress=gr.Progress()) -> str:
        """Measured depth / disparity from a server folder -> a report (Markdown). `scale` goes to the
        service as sent: it checks the range."""
        progress(0.05, desc="importing ground truth")
        report = self.curation.import_ground_truth(folder or "", kind=kind or "depth", source=source or "",
                                                   scale=scale, author=author_of(request))
        lines = [f"**Ground truth:** {report.summary()}. It is stored beside the labels (the training label "
                 "does not change) and the Train tab's comparison scores against it."]
        lines += [f"- rejected: **{md(name)}**: {md(why)}" for name, why in report.rejected[:50]]
        return "\n".join(lines)

    @user_errors("Cannot count the images")
    def open_panels(self):
        """On page load: open the step a new user needs (import into an empty store, pseudo-label
        images that have no label yet), keep the others folded."""
        counts = self.curation.status_counts()
        empty = not any(counts.values())
        unlabelled = not empty and self.curation.histogram().unscored > 0
        return gr.update(open=empty), gr.update(open=unlabelled)

    # ---- pseudo-label jobs -------------------------------------------------------------------
    @user_errors("Cannot list the models")
    def teacher_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.key) for c in self.depth.choices()] if self.depth is not None else []

    @user_errors("Cannot start pseudo-labelling")
    def start_job(self, teacher, request: gr.Request = None):
        """Start pseudo-labelling in the background; returns (job id, progress HTML, timer on)."""
        source = self.depth.choice(teacher).source if self.depth is not None else teacher
        job_id = self.curation.start_pseudo_label(source, author=author_of(request))
        return job_id, job_html(self.curation.job(job_id)), gr.update(active=True)

    @user_errors("Cannot show the job")
    def poll_job(self, job_id):
        """Timer tick / `/curate_job (job id)`: the job's progress (None: the newest); the timer stops
        when the job has finished. Reads only."""
        info = self.curation.job(job_id if job_id not in (None, "") else None)
        running = info is not None and not info.finished
        return (info.id if info else None), job_html(info), gr.update(active=running)

    @user_errors("Cannot show the job")
    def job_moved(self, job_id, seen):
        """(job id, progress HTML, timer, seen, moved): `seen` is the (job id, step, status) of the
        previous tick; `moved` says whether the gallery should be read again."""
        job_id, text, timer = self.poll_job(job_id)
        info = self.curation.job(job_id) if job_id else None
        now = [info.id, info.done, info.status] if info else None
        return job_id, text, timer, now, now != seen

    @user_errors("Cannot cancel")
    def cancel_job(self, job_id, request: gr.Request = None):
        """`/curate_cancel (job id)`."""
        if job_id in (None, ""):
            refuse("no job to cancel: start one, or give its id")
        info = self.curation.cancel_job(job_id, author=author_of(request))
        return info.id, job_html(info), gr.update(active=True)

    @user_errors("Cannot resume")
    def resume_job(self, job_id, request: gr.Request = None):
        """`/curate_resume (job id)` -> the new job."""
        if job_id in (None, ""):
            refuse("no job to resume: give the id of a failed or cancelled job")
        new_id = self.curation.resume_job(job_id, author=author_of(request))
        return new_id, job_html(self.curation.job(new_id)), gr.update(active=True)

    # ---- export ------------------------------------------------------------------------------
    @user_errors("Cannot export")
    def export(self, statuses, progress=gr.Progress()):
        """The curated set as a zip; nothing to export is refused with what the store holds."""
        result = self.curation.export(tuple(statuses or ("accepted", "corrected")), progress=_bar(progress, "exporting"))
        return str(result.zip_path), f"**Exported** {md(result.report.summary())}"
