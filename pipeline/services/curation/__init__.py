"""The curation service's parts, one module per responsibility; `pipeline.services.curation_service.CurationService`
composes them (it is what the studio's Curate tab and the CLI call).

    common.py       CurationError, the RANGES of every number a curate request takes, the shared base
    render.py       pictures for the page, cached by content: image, colour label, thumbnails, point
                    cloud; the editor's view (label over the image at an opacity, the selection, marks)
    views.py        the gallery (filters, pages, histogram, tags) and one image's views
    edits.py        correction tools as a registry, accept / reject (one or many), undo / redo,
                    point pairs, tags
    selecting.py    assisted selection: magic wand (depth, plane), superpixels, SAM when available
    calibrating.py  a label in metres from known distances / depths / heights / right angles
    intake.py       import (uploads, server folders, ground truth), pseudo-label jobs, export
Points are [h, w] (row, column) in every part, as in DA-2K's files and the store.
"""
