"""Sharded pseudo-labelling: each process (torchrun rank) labels its own shards of the manifest.

The plan is a pure function of (entries, shard size, world size): shard k holds manifest entries
k*S .. (k+1)*S - 1 and belongs to rank k mod W, so every entry has exactly one shard, a shard's
content does not depend on how many processes ran, and a rerun with any world size finds the
same shards. A rank skips its complete shards (manifest present, tar of the recorded size) and
redoes the others from scratch (a killed run's temporary tar is deleted first). Ranks share no
process group (no gloo / NCCL to hang or time out): torchrun starts, watches and restarts them,
and rank 0 writes the summary once every rank's report of this attempt is in --out.

Per rank: DataLoader workers read and decode the images (sha256 of the file bytes, EXIF
orientation) while the main thread runs the model; batches never cross a shard. Each batch
goes through `pseudo_label.flip_pairs` (image and its flip through the `Predictor`, the same
call the store job makes); while the next batch is predicted, a writer thread has it scored
(`pseudo_label.confidence_of`) and encoded on a few threads and appends it to the shard. Measured per rank: time waiting
for decoded data, predicting, and waiting for the writer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_write
from ..errors import StudioError
from ..files.image_io import decode_image
from ..intake.pseudo_label import confidence_of, flip_pairs
from .format import (
    DTYPES,
    FORMAT,
    RUN_FILE,
    ShardError,
    ShardWriter,
    encode_label,
    read_json,
    shard_is_complete,
    shard_manifests,
    write_json_atomic,
)
from .sources import Manifest, read_source

ENCODE_THREADS = 4                   # threads scoring and encoding a batch's labels while the model runs


@dataclass(frozen=True)
class LabelOptions:
    shard_size: int = 1000          # manifest entries per shard
    dtype: str = "uint16"           # label storage: uint16 (16-bit, depth_png rule), float16, float32
    batch_size: int = 8             # images per forward (each with its flip: 2x this many inputs)
    workers: int = 2                # DataLoader processes reading and decoding
    delay: float = 0.0              # tests: seconds slept after each batch (a rank killed mid-shard)
    progress: bool = False

    def __post_init__(self):
        if self.shard_size < 1 or self.batch_size < 1 or self.workers < 0:
            raise ShardError(f"shard size and batch size must be at least 1 and workers 0 or more; got "
                             f"{self.shard_size}, {self.batch_size}, {self.workers}")
        if self.dtype not in DTYPES:
            raise ShardError(f"unknown label dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class RankContext:
    """This process's place under torchrun (from its environment); one process alone: rank 0 of 1.

    Ranks need no process group: each labels its own shards, and rank 0 waits for the others'
    report files (written after their last shard) in the shared --out folder. `attempt` tells
    this launch (torchrun run id and restart count) from earlier ones, whose reports may remain."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    attempt: str = "local:0"

    @classmethod
    def from_env(cls, env=os.environ) -> RankContext:
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                   f"{env.get('TORCHELASTIC_RUN_ID', 'local')}:{env.get('TORCHELASTIC_RESTART_COUNT', 0)}")

    def device(self, preference: str | None) -> str | None:
        """The device this rank predicts on: 'cuda' (or none given, with CUDA present) -> its local GPU."""
        import torch
        if preference in (None, "", "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return preference


@dataclass
class RankStats:
    rank: int
    world: int
    device: str
    attempt: str = "local:0"
    shards_done: int = 0            # written by this run
    shards_skipped: int = 0         # found complete
    images: int = 0                 # labelled by this run
    failed: int = 0
    seconds: float = 0.0            # wall time of this rank's labelling
    data_wait_s: float = 0.0        # the model waiting for decoded images
    first_wait_s: float = 0.0       # of which for the first batch (worker start-up, nothing to overlap yet)
    predict_s: float = 0.0
    write_wait_s: float = 0.0       # the model waiting for the writer thread

    def as_dict(self) -> dict:
        d = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        d["images_per_s"] = round(self.images / self.seconds, 4) if self.seconds > 0 else 0.0
        d["data_wait_share"] = round(self.data_wait_s / self.seconds, 4) if self.seconds > 0 else 0.0
        d["steady_wait_share"] = round((self.data_wait_s - self.first_wait_s) / self.seconds, 4) if self.seconds else 0.0
        return d


def plan(entries: int, shard_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int, int]]:
    """(shard, first entry, entries) of the shards rank `rank` of `world` owns."""
    shards = math.ceil(entries / shard_size)
    return [(k, k * shard_size, min(shard_size, entries - k * shard_size)) for k in range(rank, shards, world)]


def owner(index: int, shard_size: int, world: int) -> int:
    """The rank whose shard holds manifest entry `index`."""
    return (index // shard_size) % world


def run_spec(manifest: Manifest, opts: LabelOptions, model_id: str, kind: str, input_size: int) -> dict:
    return {"format": FORMAT, "manifest_sha256": manifest.digest, "entries": manifest.count,
            "shard_size": opts.shard_size, "model_id": model_id, "kind": kind, "dtype": opts.dtype,
            "input_size": input_size}


def ensure_run(out: Path, spec: dict) -> None:
    """Record what the folder holds; refuse a folder made by another manifest, model or setting."""
    path = out / RUN_FILE
    if path.exists():
        have = read_json(path, "run file")
        for key, value in spec.items():
            if have.get(key) != value:
                raise ShardError(f"{out} holds shards of another run ({key} {have.get(key)!r} there, {value!r} "
                                 "now); rerun with the same settings to resume, or choose a new --out folder")
        return
    write_json_atomic(path, spec)


# ----------------------------------------------------------------------------- reading (workers)
@dataclass
class _Loaded:
    index: int
    source: str
    sha256: str = ""
    nbytes: int = 0
    rgb: np.ndarray | None = None   # (H, W, 3) uint8 after EXIF orientation
    error: str | None = None


def load_entry(index: int, source: str) -> _Loaded:
    """Read and decode one entry; an unreadable one comes back with `error` set (never raises for it)."""
    try:
        data = read_source(source)
    except ShardError:
        raise                                       # fsspec missing: the whole run needs fixing
    except Exception as e:                          # missing file, network, permissions: skip it
        return _Loaded(index, source, error=f"cannot read: {type(e).__name__}: {e}")
    loaded = _Loaded(index, source, hashlib.sha256(data).hexdigest(), len(data))
    try:
        loaded.rgb = decode_image(data, name=source).rgb
    except StudioError as e:
        loaded.error = str(e)
    return loaded


class _Entries(Dataset):
    def __init__(self, items: list[tuple[int, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> _Loaded:
        return load_entry(*self.items[i])


def _as_list(batch: list) -> list:
    return batch


def _batches(todo: list[tuple[int, int, int]], batch_size: int) -> list[list[int]]:
    """Dataset positions in batches that never cross a shard."""
    out, pos = [], 0
    for _, _, count in todo:
        out += [list(range(pos + a, pos + min(count, a + batch_size))) for a in range(0, count, batch_size)]
        pos += count
    return out


# ----------------------------------------------------------------------------- labelling (main)
def _encode(item: _Loaded, pair: tuple, model_id: str, kind: str, dtype: str) -> tuple[dict, str, bytes]:
    """(item JSON, label member suffix, label bytes): the confidence and the encoding of one image."""
    suffix, data, label_meta = encode_label(pair[0], dtype)
    h, w = item.rgb.shape[:2]
    meta = {"index": item.index, "source": item.source, "sha256": item.sha256, "nbytes": item.nbytes,
            "width": w, "height": h, "model_id": model_id, "kind": kind,
            "confidence": confidence_of(pair), "dtype": dtype, **label_meta}
    return meta, suffix, data


def _write_batch(writer: ShardWriter, encoder: ThreadPoolExecutor, batch: list[_Loaded], pairs: dict[int, tuple],
                 model_id: str, kind: str, dtype: str) -> None:
    """Score and encode a predicted batch on the encoder threads (numpy and PNG compression
    release the GIL), then append it to the shard in order (runs on the writer thread)."""
    ok = [item for item in batch if item.error is None]
    encoded = dict(zip([i.index for i in ok], encoder.map(
        lambda i: _encode(i, pairs[i.index], model_id, kind, dtype), ok), strict=True))
    for item in batch:
        if item.error is not None:
            writer.fail(item.index, item.source, item.error)
        else:
            writer.add(*encoded[item.index])


def label_rank(predictor, manifest: Manifest, out: Path, spec: dict, opts: LabelOptions,
               ctx: RankContext = RankContext()) -> RankStats:
    """Label this rank's incomplete shards of `manifest` (which holds at least this rank's
    entries: `read_manifest(path, keep=lambda i: owner(i, shard_size, world) == rank)`) into `out`."""
    rank, world = ctx.rank, ctx.world
    mine = plan(manifest.count, opts.shard_size, rank, world)
    todo = [s for s in mine if not shard_is_complete(out, s[0])]
    stats = RankStats(rank, world, str(predictor.device), ctx.attempt, shards_skipped=len(mine) - len(todo))
    items = [(i, manifest.entries[i]) for _, first, count in todo for i in range(first, first + count)]
    if not items:
        return stats
    loader = DataLoader(_Entries(items), batch_sampler=_batches(todo, opts.batch_size), num_workers=opts.workers,
                        collate_fn=_as_list, prefetch_factor=2 if opts.workers else None,
                        pin_memory=False)
    bar = None
    if opts.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(items), unit="img", desc=f"rank {rank}/{world} pseudo-label", position=0)
    header = {"run": spec["manifest_sha256"], **{k: spec[k] for k in ("model_id", "kind", "dtype", "input_size")}}
    t_start = time.perf_counter()
    batches = iter(loader)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as pool, \
                ThreadPoolExecutor(max_workers=ENCODE_THREADS, thread_name_prefix="shard-encode") as encoder:
            for shard, first, count in todo:
                _label_shard(predictor, batches, (pool, encoder), ShardWriter(out, shard, first, count, header),
                             count, stats, opts, spec, bar)
                stats.shards_done += 1
    finally:
        stats.seconds = time.perf_counter() - t_start
        if bar is not None:
            bar.close()
    return stats


def _label_shard(predictor, batches, pools, writer: ShardWriter, count: int, stats: RankStats,
                 opts: LabelOptions, spec: dict, bar) -> None:
    (pool, encoder), t0, pending, left = pools, time.perf_counter(), None, count
    try:
        while left > 0:
            t = time.perf_counter()
            batch = next(batches)
            t_data = time.perf_counter()
            ok = [b for b in batch if b.error is None]
            pairs = dict(zip([b.index for b in ok], flip_pairs(predictor, [b.rgb for b in ok]), strict=True))
            t_pred = time.perf_counter()
            if pending is not None:
                pending.result()
            if stats.images + stats.failed == 0:
                stats.first_wait_s = t_data - t
            stats.data_wait_s += t_data - t
            stats.predict_s += t_pred - t_data
            stats.write_wait_s += time.perf_counter() - t_pred
            pending = pool.submit(_write_batch, writer, encoder, batch, pairs, spec["model_id"], spec["kind"],
                                  opts.dtype)
            stats.images += len(ok)
            stats.failed += len(batch) - len(ok)
            left -= len(batch)
            if bar is not None:
                bar.update(len(batch))
            if opts.delay > 0:
                time.sleep(opts.delay)
        t = time.perf_counter()
        if pending is not None:
            pending.result()
        stats.write_wait_s += time.perf_counter() - t
        writer.close(rank=stats.rank, seconds=round(time.perf_counter() - t0, 3))
    except BaseException:
        if pending is not None:
            wait([pending])                       # the writer thread must let go of the shard first
        writer.abort()
        raise


# ----------------------------------------------------------------------------- the run's report
def write_rank_stats(out: Path, stats: RankStats) -> None:
    folder = out / "ranks"
    folder.mkdir(exist_ok=True)
    write_json_atomic(folder / f"rank-{stats.rank}-of-{stats.world}.json", stats.as_dict())


def wait_for_ranks(out: Path, ctx: RankContext, poll_s: float = 1.0) -> list[dict]:
    """Rank 0: the reports of every rank of this attempt, once all are written (polls --out).
    A rank that dies never writes one; torchrun then stops (or restarts) this process too."""
    paths = [out / "ranks" / f"rank-{r}-of-{ctx.world}.json" for r in range(ctx.world)]
    while True:
        reports = []
        for p in paths:
            try:
                reports.append(json.loads(p.read_text()))
            except (OSError, ValueError):                      # not written yet (or being replaced)
                break
        if len(reports) == ctx.world and all(r.get("attempt") == ctx.attempt for r in reports):
            return reports
        time.sleep(poll_s)


def write_summary(out: Path, spec: dict, ranks: list[dict]) -> dict:
    """summary.json + failures.jsonl from every complete shard and this attempt's rank reports."""
    manifests = shard_manifests(out, items=False)                 # first lines: counts and failures
    shards = math.ceil(spec["entries"] / spec["shard_size"])
    missing = sorted(set(range(shards)) - {m["shard"] for m in manifests})
    failures = [{**f, "shard": m["shard"]} for m in manifests for f in m["failed"]]
    atomic_write(out / "failures.jsonl", "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures))
    summary = {"model_id": spec["model_id"], "entries": spec["entries"], "shards": shards,
               "complete_shards": shards - len(missing), "missing_shards": missing,
               "done": sum(m["done"] for m in manifests), "failed": len(failures),
               "failures_file": "failures.jsonl", "ranks": ranks,
               "images_per_s": round(sum(r["images_per_s"] for r in ranks), 4)}
    write_json_atomic(out / "summary.json", summary)
    return summary
