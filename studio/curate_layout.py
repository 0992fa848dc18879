"""The Curate tab's layout: three columns that fit a 1440x900 screen together.

    intake row   Import | Ground truth | Pseudo-label | Export        (folded accordions)
    side         filters, the gallery as a narrow strip, pages, decisions on many images
    main         header + accept / reject / next, the view (label over the image at an opacity;
                 a click selects) | Brush | Slider | 3D
    tools        what a click does, the selection, the correction tool + Apply, undo / redo,
                 point pairs, calibration to metres, history, tags
Every component a test or a script drives has an elem_id (curate-...).
"""
from __future__ import annotations

import gradio as gr

from pipeline.services.curation_service import RANGES, REFERENCE_TYPES, TOOLS

from .components import lenient
from .curate_gallery import ALL_CLIPS, ALL_TAGS, SORT_CHOICES, STATUS_FILTERS
from .curate_text import HISTORY_HEADERS, PAIR_HEADERS, REFERENCE_HEADERS

VIEW_HEIGHT = 500
REFERENCE_CHOICES = [("distance between two clicked points", "distance"),
                     ("depth at the clicked point", "depth_point"), ("median depth of the selection", "depth_region"),
                     ("camera height over the selected floor", "camera_height"),
                     ("right angle: two selected planes", "right_angle")]
assert {v if v not in ("depth_point", "depth_region") else "depth" for _, v in REFERENCE_CHOICES} == set(REFERENCE_TYPES)


def intake_row(root, teachers, default_teacher, allow_custom: bool) -> dict:
    c = {}
    with gr.Row(elem_id="curate-intake", equal_height=False):
        with gr.Accordion("Import images or video", open=False, elem_id="curate-import-panel") as c["import_panel"]:
            c["files"] = gr.File(label="Images, videos or zips", file_count="multiple", type="filepath",
                                 file_types=["image", "video", ".zip"], elem_id="curate-upload", height=110)
            c["rate"] = gr.Number(1.0, label="Video frames per second", minimum=0.01, elem_id="curate-video-rate")
            c["up"] = gr.Button("Import uploads", elem_id="curate-import", size="sm")
            c["folder"] = gr.Textbox(label=f"or a folder on the server (inside {root})", elem_id="curate-folder")
            c["go"] = gr.Button("Import folder", elem_id="curate-import-folder", size="sm")
            c["report"] = gr.Markdown(elem_id="curate-import-report")
        with gr.Accordion("Import ground truth", open=False, elem_id="curate-gt-panel"):
            gr.Markdown("Images with same-named measured depth / disparity (`a.jpg` + `a.npy` / `a_depth.png`, or "
                        "`images/` + `depth/`; `a_mask.png` marks measured pixels). Stored beside the labels, "
                        "never replacing the one training reads.")
            c["gt_folder"] = gr.Textbox(label=f"Folder on the server (inside {root})", elem_id="curate-gt-folder")
            c["gt_kind"] = gr.Radio([("depth in metres", "depth"), ("disparity", "disparity")], value="depth",
                                    label="The files hold", elem_id="curate-gt-kind")
            c["gt_source"] = gr.Textbox(label="Source (e.g. lidar-2025)", elem_id="curate-gt-source")
            c["gt_scale"] = lenient(gr.Number(1.0, label="Scale (0.001 for millimetres)", elem_id="curate-gt-scale"))
            c["gt_go"] = gr.Button("Import ground truth", elem_id="curate-gt-import", size="sm")
            c["gt_report"] = gr.Markdown(elem_id="curate-gt-report")
        with gr.Accordion("Pseudo-label (teacher + confidence)", open=False, elem_id="curate-job-panel") as c["job_panel"]:
            c["teacher"] = gr.Dropdown(teachers, value=default_teacher, label="Teacher model",
                                       allow_custom_value=allow_custom, elem_id="curate-teacher")
            with gr.Row():
                c["start"] = gr.Button("Start", variant="primary", elem_id="curate-job-start", size="sm")
                c["cancel"] = gr.Button("Cancel", elem_id="curate-job-cancel", size="sm")
                c["resume"] = gr.Button("Resume", elem_id="curate-job-resume", size="sm")
            c["job_box"] = gr.HTML("<p>No pseudo-labelling job yet.</p>", elem_id="curate-job")
        with gr.Accordion("Export the curated set", open=False, elem_id="curate-export-panel"):
            c["ex_status"] = gr.CheckboxGroup(["accepted", "corrected", "pending", "rejected"],
                                              value=["accepted", "corrected"], label="Images with status",
                                              elem_id="curate-export-status")
            c["ex_button"] = gr.Button("Export (zip)", elem_id="curate-export", size="sm")
            c["ex_file"] = gr.File(label="Dataset zip", elem_id="curate-export-file", height=80)
            c["ex_note"] = gr.Markdown(elem_id="curate-export-note")
    return c


def side_column() -> dict:
    c = {}
    # one above the other: side by side in this narrow column the sort order's name was cut off
    c["status"] = gr.Dropdown(list(STATUS_FILTERS), value="all", label="Status", elem_id="curate-status")
    c["sort"] = gr.Dropdown(list(SORT_CHOICES), value="confidence, worst first", label="Sort", elem_id="curate-sort")
    with gr.Accordion("Filters and confidence histogram", open=False, elem_id="curate-filters"):
        c["name"] = gr.Textbox(label="Name contains (or a glob: kitchen_*.jpg)", elem_id="curate-name")
        c["tag"] = gr.Dropdown([("any tag", ALL_TAGS)], value=ALL_TAGS, label="Tag", elem_id="curate-tag")
        with gr.Row():        # text, so that "no bound" is empty (a Number shows 0); the service checks 0..1
            c["min_conf"] = gr.Textbox(label="Confidence from", placeholder="0", elem_id="curate-min-conf",
                                       min_width=80, max_lines=1)
            c["max_conf"] = gr.Textbox(label="to", placeholder="1", elem_id="curate-max-conf", min_width=80,
                                       max_lines=1)
        c["clip"] = gr.Dropdown([("all images", ALL_CLIPS)], value=ALL_CLIPS, label="Video clip",
                                elem_id="curate-clip")
        c["page"] = lenient(gr.Number(1, label="Jump to page", precision=0, minimum=1, elem_id="curate-page"))
        c["histogram"] = gr.Markdown(elem_id="curate-histogram")
    c["counts"] = gr.Markdown(elem_id="curate-counts")
    c["gallery"] = gr.Gallery(label="Images | labels", columns=2, height=320, allow_preview=False,
                              object_fit="contain", elem_id="curate-gallery", show_label=False)
    with gr.Row(equal_height=True):
        c["prev_page"] = gr.Button("◀", size="sm", elem_id="curate-page-prev", min_width=36, scale=0)
        c["page_info"] = gr.Markdown(elem_id="curate-page-info", min_width=120)
        c["next_page"] = gr.Button("▶", size="sm", elem_id="curate-page-next", min_width=36, scale=0)
    with gr.Accordion("Decide on many images", open=False, elem_id="curate-bulk"):
        c["ticked"] = gr.CheckboxGroup([], label="Ticked images of this page", elem_id="curate-ticked")
        with gr.Row():
            c["tick_page"] = gr.Button("Tick the page", size="sm", elem_id="curate-tick-page")
            c["bulk_accept"] = gr.Button("Accept ticked", size="sm", variant="primary", elem_id="curate-bulk-accept")
            c["bulk_reject"] = gr.Button("Reject ticked", size="sm", variant="stop", elem_id="curate-bulk-reject")
        with gr.Row():
            c["bulk_tags"] = gr.Textbox(label="Tags for the ticked", elem_id="curate-bulk-tags", min_width=120)
            c["bulk_tag"] = gr.Button("Tag ticked", size="sm", elem_id="curate-bulk-tag")
        c["filter_to"] = gr.Radio(["accepted", "rejected", "pending"], value="accepted",
                                  label="Every image matching the filters ->", elem_id="curate-filter-to")
        c["filter_dry"] = gr.Checkbox(True, label="dry run (report only)", elem_id="curate-filter-dry")
        c["filter_go"] = gr.Button("Apply to every match", size="sm", elem_id="curate-filter-apply")
        c["bulk_report"] = gr.Markdown(elem_id="curate-bulk-report")
    return c


def main_column() -> dict:
    c = {}
    c["header"] = gr.Markdown(elem_id="curate-header")
    with gr.Row(elem_id="curate-nav", equal_height=True):
        c["prev"] = gr.Button("← prev (p)", size="sm", elem_id="curate-prev", min_width=70)
        c["accept"] = gr.Button("Accept (a)", variant="primary", size="sm", elem_id="curate-accept", min_width=80)
        c["reject"] = gr.Button("Reject (r)", variant="stop", size="sm", elem_id="curate-reject", min_width=80)
        c["next"] = gr.Button("next (n) →", size="sm", elem_id="curate-next", min_width=70)
        c["goto"] = gr.Textbox(label="Go to #", elem_id="curate-goto", min_width=70, max_lines=1,
                               show_label=False, placeholder="go to #", container=False)
    with gr.Tabs(elem_id="curate-view-tabs"):
        with gr.Tab("Select", id="select", elem_id="curate-tab-select"):
            c["view"] = gr.Image(label="Label over the image: click to select", type="numpy", interactive=False,
                                 height=VIEW_HEIGHT, elem_id="curate-view", show_label=False,
                                 buttons=["fullscreen"])
        with gr.Tab("Brush", id="brush", elem_id="curate-tab-brush"):
            c["editor"] = gr.ImageEditor(type="numpy", format="png", sources=(), transforms=(), layers=False,
                                         brush=gr.Brush(colors=["rgba(255, 0, 255, 0.6)"], color_mode="fixed"),
                                         height=VIEW_HEIGHT, elem_id="curate-editor", show_label=False)
        with gr.Tab("Slider", id="slider", elem_id="curate-tab-slider"):
            c["slider"] = gr.ImageSlider(label="Image | label", type="filepath", height=VIEW_HEIGHT,
                                         elem_id="curate-slider")
        with gr.Tab("3D", id="cloud", elem_id="curate-tab-3d"):
            c["cloud"] = gr.Model3D(label="Point cloud of the label", elem_id="curate-cloud", height=VIEW_HEIGHT - 40)
            c["cloud_note"] = gr.Markdown(elem_id="curate-cloud-note")
    return c


def tools_column(modes: list[tuple[str, str, bool, str]]) -> dict:
    c = {}
    c["opacity"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Label opacity", elem_id="curate-opacity")
    choices = [(title if ok else f"{title}: unavailable", key) for key, title, ok, _ in modes] + \
        [("Points (pairs, calibration)", "points")]
    why = "; ".join(reason.split(" (")[0] for _, _, ok, reason in modes if not ok)      # the full reason: the refusal
    c["mode"] = gr.Dropdown(choices, value="wand_depth", label="A click on the image", elem_id="curate-mode",
                            info=why or None)
    c["operation"] = gr.Radio(["add", "subtract", "replace"], value="add", show_label=False,
                              elem_id="curate-operation", container=False)
    tol = RANGES["tolerance"]
    c["tolerance"] = gr.Slider(tol.low, 0.5, value=0.05, step=0.005, label="Wand tolerance (share of the depth range)",
                               elem_id="curate-tolerance")
    c["selection_info"] = gr.Markdown(elem_id="curate-selection-info")
    with gr.Row():
        c["clear"] = gr.Button("Clear (c)", size="sm", elem_id="curate-clear", min_width=60)
        c["snap"] = gr.Button("Snap to superpixels", size="sm", elem_id="curate-snap", min_width=60)
        c["absorb"] = gr.Button("Take brush strokes", size="sm", elem_id="curate-absorb", min_width=60)
    # the tool on its own line, so its long names ("Fit a plane (walls, floors, tables)") show whole
    c["tool"] = gr.Dropdown([(desc, key) for key, (desc, _) in TOOLS.items()], value="sky",
                            label="Correction tool", elem_id="curate-tool")
    with gr.Row(equal_height=True):
        c["apply"] = gr.Button("Apply", variant="primary", elem_id="curate-apply", scale=2, min_width=70)
        c["undo"] = gr.Button("Undo (u)", size="sm", elem_id="curate-undo", interactive=False, min_width=60)
        c["redo"] = gr.Button("Redo (y)", size="sm", elem_id="curate-redo", interactive=False, min_width=60)
    with gr.Accordion("Tool and superpixel settings", open=False, elem_id="curate-settings"):
        sigma = RANGES["sigma"]
        c["sigma"] = lenient(gr.Number(2.0, label="Smoothing sigma (px)", minimum=sigma.low, maximum=sigma.high,
                                       elem_id="curate-sigma"))
        c["source"] = gr.Dropdown([], label="Copy from model", elem_id="curate-source")
        c["method"] = gr.Dropdown(["slic", "felzenszwalb"], value="slic", label="Superpixels",
                                  elem_id="curate-sp-method")
        c["detail"] = gr.Slider(20, 2000, value=300, step=10, label="Superpixel detail", elem_id="curate-sp-detail")
    return c


def tools_accordions() -> dict:
    c = {}
    with gr.Accordion("Calibrate to metres", open=False, elem_id="curate-calibrate-panel"):
        c["ref_kind"] = gr.Dropdown(REFERENCE_CHOICES, value="distance", label="Reference", elem_id="curate-ref-kind")
        with gr.Row():
            c["metres"] = gr.Textbox(label="metres", placeholder="2.5", elem_id="curate-ref-metres", min_width=80,
                                     max_lines=1)
            c["add_ref"] = gr.Button("Add reference", size="sm", elem_id="curate-add-ref", min_width=80)
            c["clear_refs"] = gr.Button("Clear", size="sm", elem_id="curate-clear-refs", min_width=60)
        c["refs_table"] = gr.Dataframe(headers=REFERENCE_HEADERS, interactive=False, elem_id="curate-refs")
        with gr.Row():
            c["focal"] = gr.Textbox(label="Focal length (px)", placeholder="EXIF, else a 60° view",
                                    elem_id="curate-focal", min_width=100, max_lines=1)
            c["zero_shift"] = gr.Checkbox(False, label="assume zero shift", elem_id="curate-zero-shift")
        c["calibrate"] = gr.Button("Calibrate → metric revision", variant="primary", size="sm",
                                   elem_id="curate-calibrate")
        c["calib_info"] = gr.Markdown(elem_id="curate-calib-info")
    with gr.Accordion("Point pairs", open=False, elem_id="curate-pairs-panel"):
        gr.Markdown("Click does: **Points**, click A then B, say which is closer. Green: the label agrees; red: "
                    "flagged. Points are [h, w] (row, column), as in DA-2K.")
        with gr.Row():
            c["closer"] = gr.Radio(["A", "B"], value="A", label="Closer", elem_id="curate-closer", min_width=80)
            c["add_pair"] = gr.Button("Add pair", size="sm", elem_id="curate-add-pair", min_width=80)
        c["pair_info"] = gr.Markdown(elem_id="curate-pair-info")
        c["pairs"] = gr.Dataframe(headers=PAIR_HEADERS, interactive=False, elem_id="curate-pairs")
        with gr.Row():
            c["pair_id"] = lenient(gr.Number(None, label="Pair to delete", precision=0, elem_id="curate-pair-id"))
            c["delete_pair"] = gr.Button("Delete pair", size="sm", elem_id="curate-delete-pair")
    with gr.Accordion("History and tags", open=False, elem_id="curate-history-panel"):
        c["history"] = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="curate-history")
        with gr.Row():
            c["tags"] = gr.Textbox(label="Tags (comma-separated)", elem_id="curate-tags", min_width=120)
            c["save_tags"] = gr.Button("Save tags", size="sm", elem_id="curate-save-tags", min_width=60)
    return c
