"""Images: dedupe, whole records, gallery filter/sort/paging, counts, threads, corruption."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.store import CorruptRecordError, ImageRecord, InvalidValueError, Location, NotFoundError, Page, Store
from pipeline.store.blobs import sha256_bytes


def test_add_image_stores_bytes_content_addressed_and_dedupes(store, make_png):
    data = make_png(seed=3)
    rec, created = store.add_image(data, "Photo 1.PNG", width=8, height=6, source="upload", author="ann")
    digest = sha256_bytes(data)
    path = store.files_dir / digest[:2] / f"{digest[2:]}.png"
    assert created
    assert rec == ImageRecord(id=rec.id, sha256=digest, name="Photo 1.PNG", path=path, width=8, height=6,
                              nbytes=len(data), source="upload", status="pending", confidence=None,
                              head_revision_id=None, created_at=rec.created_at, updated_at=rec.created_at)
    assert path.read_bytes() == data and store.image_bytes(rec.id) == data
    again, created = store.add_image(data, "copy.png", width=8, height=6)
    assert (again, created) == (rec, False)
    assert store.find_image(digest) == rec
    assert [e.action for e in store.audit_log()] == ["image.add"]


def test_damaged_image_file_is_reported(store, image):
    image.path.write_bytes(b"garbage")
    with pytest.raises(CorruptRecordError, match=rf"image {image.id} \(cat.png\) .* is damaged"):
        store.image_bytes(image.id)
    assert len(store.verify()) == 1


def test_damaged_or_missing_array_raises_naming_the_revision(store, image, make_depth):
    store.add_prediction(image.id, "m", "disparity", make_depth())
    rev = store.head(image.id)
    npy = store.blobs.path(rev.depth_sha256, ".npy")
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0x01                       # one flipped bit in the last float
    npy.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecordError, match=rf"depth of label revision {rev.id} .* is damaged: .*restore"):
        store.load_label(rev.id)
    with pytest.raises(CorruptRecordError):
        store.training_items(("pending",))[0].depth()
    assert any("damaged" in p for p in store.verify())
    npy.unlink()
    with pytest.raises(CorruptRecordError, match=rf"depth of label revision {rev.id} .* is missing"):
        store.load_label(rev.id)


def test_unknown_ids_are_not_found(store):
    with pytest.raises(NotFoundError, match="image 42 is not in the store"):
        store.get_image(42)
    with pytest.raises(NotFoundError, match="revision 7"):
        store.get_revision(7)


@pytest.fixture
def gallery(store, make_png, make_depth):
    """6 images: names f..a, confidences, statuses."""
    spec = [("f.png", 0.9, "accepted"), ("e.png", 0.1, "pending"), ("d.png", None, "pending"),
            ("c.png", 0.5, "corrected"), ("b.png", 0.3, "pending"), ("a.png", 0.7, "rejected")]
    ids = {}
    for seed, (name, conf, status) in enumerate(spec):
        rec, _ = store.add_image(make_png(seed=seed), name, width=8, height=6)
        if conf is not None:
            store.add_prediction(rec.id, "m", "disparity", make_depth(), confidence=conf)
        if status != "pending":
            store.set_status(rec.id, status, author="t")
        ids[name] = rec.id
    return ids


def names(page: Page) -> list[str]:
    return [i.name for i in page.items]


def test_gallery_sorts_filters_and_pages(store, gallery):
    assert names(store.list_images()) == ["e.png", "b.png", "c.png", "a.png", "f.png", "d.png"]  # worst first, unscored last
    assert names(store.list_images(descending=True)) == ["f.png", "a.png", "c.png", "b.png", "e.png", "d.png"]
    assert names(store.list_images(sort="name")) == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    assert names(store.list_images(sort="date")) == ["f.png", "e.png", "d.png", "c.png", "b.png", "a.png"]
    page = store.list_images(status="pending", sort="confidence", offset=1, limit=1)
    assert (names(page), page.total, page.offset, page.limit) == (["b.png"], 3, 1, 1)
    assert names(store.list_images(status="accepted,corrected", sort="name")) == ["c.png", "f.png"]
    assert names(store.list_images(status=["rejected"])) == ["a.png"]
    assert store.count_by_status() == {"pending": 3, "accepted": 1, "rejected": 1, "corrected": 1}
    assert store.image_ids("pending") == [gallery["e.png"], gallery["d.png"], gallery["b.png"]]


def test_locate_gives_position_and_neighbours(store, gallery):
    g = gallery
    assert store.locate(g["e.png"]) == Location(0, 6, None, g["b.png"])
    assert store.locate(g["c.png"]) == Location(2, 6, g["b.png"], g["a.png"])
    assert store.locate(g["d.png"]) == Location(5, 6, g["f.png"], None)
    assert store.locate(g["b.png"], status="pending", sort="name") == Location(0, 3, None, g["d.png"])
    assert store.locate(g["a.png"], status="pending") == Location(None, 3, None, g["e.png"])


def test_gallery_rejects_bad_arguments(store):
    with pytest.raises(InvalidValueError, match="unknown sort 'size'"):
        store.list_images(sort="size")
    with pytest.raises(InvalidValueError, match="unknown status 'done'"):
        store.list_images(status="done")
    with pytest.raises(InvalidValueError, match="page limit"):
        store.list_images(limit=0)


def test_one_store_shared_by_threads(tmp_path, make_png):
    store = Store(tmp_path / "t.db")
    errors = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                store.add_image(make_png(seed=100 * k + i), f"{k}-{i}.png", width=8, height=6, author=f"t{k}")
                store.list_images(limit=10)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_by_status()["pending"] == 20
    assert len(store.audit_log(limit=100)) == 20


def test_arrays_of_unsupported_dtype_are_refused(store, image):
    with pytest.raises(InvalidValueError, match="int64"):
        store.add_prediction(image.id, "m", "disparity", np.zeros((6, 8), np.int64))
