"""The curation service: what the studio's Curate tab (and its API, and the accept / reject CLI) calls.
No gradio, no SQL here.

`CurationService(store, settings)` composes the label store with the import, correction, selection,
calibration, rendering, job and export modules; its parts live in pipeline/curation/, one per
responsibility:
- views (`GalleryViews`): gallery pages filtered by status, clip, name, tag and confidence; counts, the
  confidence histogram, tags; one image's views and the editor's picture (label over the image);
- edits (`Edits`): correction tools in TOOLS turn (label, selected region) into ONE new revision, saved
  with `expected_head` = the revision the caller showed (a stale head is refused before any work);
  accept / reject one image or many, undo / redo (the status follows the head), point pairs, tags;
- selection (`Selecting`): magic wand (similar depth, same plane), superpixels, SAM when available;
- calibration (`Calibrating`): a label in metres from known distances, depths, heights, right angles;
- intake (`Intake`): imports, ground truth, pseudo-labelling jobs, export.
Points are [h, w] (row, column) throughout, as in DA-2K's files and the store.
"""
from __future__ import annotations

from .curation.calibrating import REFERENCE_TYPES, Calibrated, Calibrating
from .curation.common import RANGES, CurationError
from .curation.edits import TOOLS, Edits, ToolContext, ToolResult
from .curation.intake import PSEUDO_LABEL, ExportResult, Intake
from .curation.render import THUMB_HEIGHT, Mark, View
from .curation.selecting import SELECT_MODES, Selecting
from .curation.views import GalleryPage, GalleryViews, LabelView


class CurationService(GalleryViews, Edits, Selecting, Calibrating, Intake):
    """CurationService(store, settings, *, import_root=None, cmap=None): see the module docstring."""


__all__ = ["CurationService", "CurationError", "RANGES", "TOOLS", "SELECT_MODES", "REFERENCE_TYPES",
           "ToolContext", "ToolResult", "LabelView", "GalleryPage", "ExportResult", "Calibrated", "Mark", "View",
           "PSEUDO_LABEL", "THUMB_HEIGHT"]
