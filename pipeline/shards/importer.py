"""`import_shards`: a labelling run's shards into the label store.

For every complete shard (checksum verified first; a damaged shard is reported and skipped):
each item whose image (content hash) already has this model's prediction is skipped; the others
are read from their source (bytes re-hashed: a file changed since labelling is reported, not
imported), then added in one transaction per chunk through the store's own API
(`add_image`, `add_prediction(make_label=True)`), so an imported label is the same record the
single-machine job writes: prediction, revision 1 (tool 'pseudo_label', author
'model:<id>'), confidence. Sources are read before the transaction, a few at a time, so the
write lock is held only for writing. Rerunning is a no-op; a kill loses at most one chunk's
uncommitted rows.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..store import Store
from .format import ShardError, ShardItem, iter_items, shard_manifests
from .sources import display_name, read_source


@dataclass
class ShardImportReport:
    shards: int = 0                       # complete shards read
    images_added: int = 0
    labels_added: int = 0
    already: int = 0                      # image and this model's label were there
    failed: list[tuple[str, str]] = field(default_factory=list)       # (source, reason)
    bad_shards: list[tuple[str, str]] = field(default_factory=list)   # (shard, reason)

    def as_dict(self) -> dict:
        return {"shards": self.shards, "images_added": self.images_added, "labels_added": self.labels_added,
                "already": self.already, "failed": len(self.failed), "bad_shards": len(self.bad_shards)}

    def summary(self) -> str:
        return (f"{self.shards} shards: {self.images_added} images and {self.labels_added} labels added, "
                f"{self.already} already there, {len(self.failed)} failed, {len(self.bad_shards)} damaged shards")


def _fetch(item: ShardItem) -> bytes | str:
    """The item's image bytes, checked against its content hash; a reason string when unusable."""
    try:
        data = read_source(item.source)
    except ShardError:
        raise
    except Exception as e:
        return f"cannot read: {type(e).__name__}: {e}"
    if hashlib.sha256(data).hexdigest() != item.sha256:
        return "the file changed since it was labelled (content hash differs); label it again"
    return data


class _Importer:
    def __init__(self, store: Store, report: ShardImportReport, author: str, readers: int):
        self.store, self.report, self.author = store, report, author
        self.pool = ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="shard-import-read")

    def chunk(self, items: list[ShardItem]) -> None:
        todo = []
        for item in items:
            rec = self.store.find_image(item.sha256)
            if rec is not None and self.store.pseudo_label_done(rec.id, item.model_id):
                self.report.already += 1
            else:
                todo.append((item, rec))
        need = [item for item, rec in todo if rec is None]
        fetched = dict(zip([id(i) for i in need], self.pool.map(_fetch, need), strict=True))
        with self.store.write():                                     # one transaction per chunk
            for item, rec in todo:
                if rec is None:
                    data = fetched[id(item)]
                    if isinstance(data, str):
                        self.report.failed.append((item.source, data))
                        continue
                    rec, created = self.store.add_image(data, display_name(item.source), width=item.width,
                                                        height=item.height, source=item.source, author=self.author)
                    self.report.images_added += created
                _, created = self.store.add_prediction(rec.id, item.model_id, item.kind,
                                                       np.asarray(item.depth, np.float32),
                                                       confidence=item.confidence, make_label=True)
                self.report.labels_added += created
                self.report.already += not created

    def close(self) -> None:
        self.pool.shutdown()


def import_shards(store: Store, folder: str | os.PathLike, *, author: str = "import-shards", chunk: int = 500,
                  readers: int = 8, progress: bool = False) -> ShardImportReport:
    """Add every complete shard's images and labels under `folder` to `store` (see module doc)."""
    folder = Path(folder)
    manifests = shard_manifests(folder)
    report = ShardImportReport()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(m["items"]) for m in manifests), unit="img", desc="import shards")
    importer = _Importer(store, report, author, readers)
    try:
        for m in manifests:
            batch: list[ShardItem] = []
            try:
                for item in iter_items(folder, m):                    # checksum verified first
                    batch.append(item)
                    if len(batch) >= chunk:
                        importer.chunk(batch)
                        _advance(bar, len(batch))
                        batch = []
            except ShardError as e:
                report.bad_shards.append((m["tar"]["file"], str(e)))
                _advance(bar, len(m["items"]) - len(batch))
                continue
            importer.chunk(batch)
            _advance(bar, len(batch))
            report.shards += 1
    finally:
        importer.close()
        if bar is not None:
            bar.close()
    return report


def _advance(bar, n: int) -> None:
    if bar is not None and n > 0:
        bar.update(n)
