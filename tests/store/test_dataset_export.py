"""Export -> import reproduces images, labels, masks, point pairs and statuses bit for bit."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from pipeline.cli import export as export_cli
from pipeline.files.depth_png import read_depth_png
from pipeline.intake import dataset_export
from pipeline.intake.dataset_export import DatasetError, export_dataset, import_dataset, push_to_hub
from pipeline.store import Store


@pytest.fixture
def curated(store, make_png, make_depth):
    """3 images: corrected (masks + pairs), accepted (metric, NaN-free), pending (not exported)."""
    rng = np.random.default_rng(0)
    a, _ = store.add_image(make_png(seed=1), "street scene.png", width=8, height=6)
    b, _ = store.add_image(make_png(seed=2), "room.jpg", width=8, height=6)
    c, _ = store.add_image(make_png(seed=3), "pending.png", width=8, height=6)
    store.add_prediction(a.id, "teacher", "disparity", rng.random((6, 8), dtype=np.float32), confidence=0.4)
    store.add_prediction(b.id, "metric-t", "metric_depth", (rng.random((6, 8)) * 20).astype(np.float32), confidence=0.9)
    store.add_prediction(c.id, "teacher", "disparity", make_depth())
    ignore = rng.random((6, 8)) > 0.5
    sky = (rng.random((6, 8)) * 255).astype(np.uint8)
    store.save_revision(a.id, rng.random((6, 8), dtype=np.float32), expected_head=store.head(a.id).id,
                        tool="plane", author="ann", masks={"ignore": ignore, "sky": sky}, note="wall")
    store.add_point_pair(a.id, [0, 1], [5, 7], 2, author="ann", flagged=True)
    store.add_point_pair(a.id, [2, 2], [3, 3], 1, author="bob")
    store.set_status(b.id, "accepted", author="ann")
    gt = (rng.random((6, 8)) * 5 + 1).astype(np.float32)
    store.add_ground_truth(b.id, gt, kind="metric_depth", source="lidar", author="ann", valid=gt > 2)
    return a, b, c


def snapshot(store: Store) -> dict:
    """Everything the round trip must keep, keyed by image sha256."""
    out = {}
    for item in store.training_items(("accepted", "corrected")):
        img = store.get_image(item.image_id)
        label = store.load_label(item.revision_id)
        out[img.sha256] = {
            "bytes": store.image_bytes(img.id), "name": img.name, "status": img.status,
            "kind": item.kind, "model_id": item.model_id, "depth": label.depth.tobytes(),
            "masks": {n: (m.dtype.name, m.tobytes()) for n, m in label.masks.items()},
            "pairs": [(p.point1, p.point2, p.closer, p.author, p.flagged) for p in item.point_pairs],
            "source": label.revision.source, "human": _bytes(store.human_pixels(label.revision))}
        gt = store.ground_truth(img.id)
        if gt is not None:
            out[img.sha256]["gt"] = (gt.source, gt.kind, store.load_label(gt).depth.tobytes(),
                                     _bytes(store.valid_pixels(gt)))
    return out


def _bytes(a):
    return None if a is None else a.tobytes()


def test_round_trip_is_bit_for_bit(store, curated, tmp_path):
    a, b, c = curated
    out = tmp_path / "export"
    report = export_dataset(store, out)
    assert (report.images, report.labels, report.masks, report.point_pairs) == (2, 2, 2, 2)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["name"], r["status"], r["kind"], r["model_id"]) for r in rows] == [
        ("street scene.png", "corrected", "disparity", "teacher"), ("room.jpg", "accepted", "metric_depth", "metric-t")]
    ra = rows[0]
    assert ra["key"] == f"street_scene-{a.sha256[:10]}" and ra["image"] == f"images/{ra['key']}.png"
    assert ra["revision"]["author"] == "ann" and ra["revision"]["tool"] == "plane" and ra["revision"]["number"] == 2
    assert ra["masks"] == {"ignore": {"file": f"masks/{ra['key']}.ignore.png", "dtype": "bool"},
                           "sky": {"file": f"masks/{ra['key']}.sky.png", "dtype": "uint8"}}
    assert ra["point_pairs"][0] == {"point1": [0, 1], "point2": [5, 7], "closer_point": "point2", "author": "ann",
                                    "flagged": True, "created_at": ra["point_pairs"][0]["created_at"]}
    assert json.loads((out / "point_pairs.json").read_text())[ra["key"]] == ra["point_pairs"]
    # the 16-bit PNG holds the label to within half a quantisation step
    head = store.load_label(store.head(a.id).id).depth
    png = read_depth_png(out / ra["label_png"])
    assert np.max(np.abs(png - head)) <= (head.max() - head.min()) / 65535 / 2 + 1e-7
    assert np.array_equal(np.load(out / ra["label"]), head)

    fresh = Store(tmp_path / "other.db")
    rep = import_dataset(out, fresh, author="importer")
    assert (rep.images_added, rep.revisions_added, rep.point_pairs_added, rep.problems) == (2, 3, 2, [])
    assert snapshot(fresh) == snapshot(store)
    assert snapshot(fresh)[b.sha256]["source"] == "model:metric-t"           # a pseudo-label stays a model's
    assert snapshot(fresh)[a.sha256]["source"] == "human" and "gt" in snapshot(fresh)[b.sha256]
    rev = fresh.head(fresh.find_image(a.sha256).id)
    assert (rev.tool, rev.author) == ("import", "importer")
    assert rev.note.startswith("imported from export: revision 2 (plane) by ann at ")
    # importing again changes nothing
    again = import_dataset(out, fresh)
    assert (again.images_added, again.images_existing, again.revisions_added, again.point_pairs_added) == (0, 2, 0, 0)
    assert snapshot(fresh) == snapshot(store)


def test_import_into_the_same_store_is_a_no_op(store, curated, tmp_path):
    export_dataset(store, tmp_path / "e")
    before = snapshot(store)
    rep = import_dataset(tmp_path / "e", store)
    assert (rep.images_added, rep.revisions_added, rep.point_pairs_added) == (0, 0, 0)
    assert snapshot(store) == before


def test_a_tampered_label_is_reported_not_imported(store, curated, tmp_path):
    out = tmp_path / "e"
    export_dataset(store, out)
    first = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    arr = np.load(out / first["label"])
    arr[0, 0] += 1
    np.save(out / first["label"], arr)
    fresh = Store(tmp_path / "f.db")
    rep = import_dataset(out, fresh)
    assert rep.problems == [(first["key"], f"{first['label']} does not match the manifest (float32 with its depth_sha256)")]
    assert (rep.images_added, rep.revisions_added) == (1, 2)      # the bad row left nothing behind (+ 1 GT)
    assert fresh.find_image(first["sha256"]) is None


def test_exporting_again_replaces_the_earlier_export(store, curated, tmp_path):
    out = tmp_path / "e"
    export_dataset(store, out)
    export_dataset(store, out, statuses="accepted")
    rows = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(r)["name"] for r in rows] == ["room.jpg"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [json.loads(rows[0])["image"].split("/")[1]]
    assert sorted(p.suffix for p in (out / "labels").iterdir()) == [".npy", ".png"]
    assert list((out / "masks").iterdir()) == []


def test_export_refuses_a_non_empty_unrelated_folder(store, curated, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(DatasetError, match="not empty and is not an earlier export"):
        export_dataset(store, tmp_path / "busy")


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        FakeApi.calls.append(("upload_folder", kw))


def test_push_to_hub_uploads_the_folder_as_a_dataset(monkeypatch, tmp_path):
    FakeApi.calls = []
    monkeypatch.setattr(dataset_export, "HfApi", FakeApi)
    url = push_to_hub(tmp_path, "me/labels", token="t0k")
    assert url == "https://huggingface.co/datasets/me/labels"
    assert FakeApi.calls[:2] == [("init", "t0k"), ("create_repo", "me/labels",
                                                    {"repo_type": "dataset", "private": True, "exist_ok": True})]
    upload = FakeApi.calls[2][1]
    assert (upload["repo_id"], upload["folder_path"], upload["repo_type"]) == ("me/labels", str(tmp_path), "dataset")
    assert upload["delete_patterns"] == ["images/*", "labels/*", "masks/*", "provenance/*", "ground_truth/*"]


def test_push_failure_is_a_clear_error(monkeypatch, tmp_path):
    class Offline(FakeApi):
        def create_repo(self, repo_id, **kw):
            raise ConnectionError("no network")
    monkeypatch.setattr(dataset_export, "HfApi", Offline)
    with pytest.raises(DatasetError, match="could not push .* to the Hub dataset me/x: no network. Check"):
        push_to_hub(tmp_path, "me/x")


def test_cli_export_with_status_and_push(store, curated, tmp_path, monkeypatch, capsys):
    FakeApi.calls = []
    monkeypatch.setattr(dataset_export, "HfApi", FakeApi)
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    args = parser.parse_args(["--db", str(store.path), "--out", str(tmp_path / "o"), "--status", "accepted",
                              "--push-to-hub", "me/set", "--quiet"])
    assert export_cli.run(args) == 0
    assert capsys.readouterr().out.strip() == (f"1 images, 1 labels, 0 masks, 0 point pairs -> {tmp_path / 'o'} "
                                               "(pushed to https://huggingface.co/datasets/me/set)")
    assert FakeApi.calls[-1][0] == "upload_folder"
    args = parser.parse_args(["--db", str(tmp_path / "new.db"), "--import-from", str(tmp_path / "o"), "--quiet"])
    assert export_cli.run(args) == 0
    assert Store(tmp_path / "new.db").count_by_status() == {"pending": 0, "accepted": 1, "rejected": 0, "corrected": 0}


def test_an_export_from_before_provenance_is_read_conservatively(store, curated, tmp_path):
    """format_version 1 rows have no `source`: a model's label stays a model's, and a person's edit
    of a model label claims no human pixel (which ones were set was never exported)."""
    a, b, _ = curated
    out = tmp_path / "old"
    export_dataset(store, out)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    old = [{k: v for k, v in r.items() if k not in ("source", "human_mask", "valid_mask", "ground_truth")}
           | {"format_version": 1} for r in rows]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    fresh = Store(tmp_path / "f.db")
    assert import_dataset(out, fresh).problems == []
    ra, rb = (fresh.head(fresh.find_image(x.sha256).id) for x in (a, b))
    assert rb.source == "model:metric-t" and fresh.human_pixels(rb) is None
    assert ra.source == "human" and not fresh.human_pixels(ra).any()
    assert all(fresh.evidence(fresh.find_image(x.sha256).id).ground_truth is None for x in (a, b))
