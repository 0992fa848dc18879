"""Pseudo-labelling at dataset scale: shards written by torchrun ranks, imported into the store.

    torchrun --nproc-per-node=N -m pipeline pseudo-label --manifest images.txt --checkpoint CK --out SHARDS/
    python -m pipeline import-shards SHARDS/ --db studio.db

- `sources.py`: the manifest (paths or fsspec URLs) and reading its entries;
- `format.py`: the shard folder (webdataset-style tar + JSON manifest per shard, written
  atomically when complete), encoding labels (16-bit by `pipeline.files.depth_png`'s rule, float16,
  float32), reading them back with checksums;
- `labeller.py`: one rank's work (deterministic shard plan, decoding in DataLoader workers,
  batches through the Predictor, a writer thread) and the run's summary;
- `importer.py`: shards into the label store through its public API.
Training can read shards directly (`pipeline.train.shard_source`).
"""
from .format import DTYPES, ShardError, ShardItem, iter_items, shard_manifests, verify_shard
from .importer import ShardImportReport, import_shards

__all__ = ["DTYPES", "ShardError", "ShardItem", "ShardImportReport", "import_shards", "iter_items",
           "shard_manifests", "verify_shard"]
