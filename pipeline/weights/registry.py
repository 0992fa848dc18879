"""The registry of known public Depth Anything checkpoints and their download.

Each entry says where a checkpoint lives on the Hugging Face Hub, what network it is
(encoder, version, relative or metric) and under which licence it is published, so the
studio can show the licence before anyone uses the weights. Downloads go through
huggingface_hub's cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub); offline, the
error names the repo and file and says how to pass a local file instead.

Licences (from the model cards): V2 Small and the V2 metric Small models are Apache-2.0;
V2 Base/Large and the metric Base/Large models are CC-BY-NC-4.0 (non-commercial). The V1
repos publish no separate weight licence; the V1 code repository is Apache-2.0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import METRIC_MAX_DEPTH, ModelConfig
from ..errors import CheckpointError
from . import hub

APACHE = ("Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0")
CC_BY_NC = ("CC-BY-NC-4.0", "https://creativecommons.org/licenses/by-nc/4.0/")
V1_LICENCE = ("Apache-2.0 (code repository; no separate weight licence stated)",
              "https://github.com/LiheYoung/Depth-Anything/blob/main/LICENSE")


class WeightsUnavailable(CheckpointError):
    """A registry checkpoint that is neither cached nor downloadable right now."""


@dataclass(frozen=True)
class KnownCheckpoint:
    name: str            # registry name, e.g. "depth-anything-v2-small"
    title: str           # human title shown in the studio
    repo_id: str         # Hugging Face Hub model repo
    filename: str        # file inside the repo
    encoder: str
    version: str         # "v1" | "v2"
    metric: bool
    max_depth: float     # metres (metric models only; 20 indoor, 80 outdoor)
    kind: str            # "disparity" | "metric_depth"
    licence: str
    licence_url: str

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(encoder=self.encoder, version=self.version, metric=self.metric,
                           max_depth=self.max_depth)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"

    @property
    def non_commercial(self) -> bool:
        return "NC" in self.licence


_SIZES = (("vits", "Small"), ("vitb", "Base"), ("vitl", "Large"))


def _v2(enc: str, size: str) -> KnownCheckpoint:
    lic = APACHE if enc == "vits" else CC_BY_NC
    return KnownCheckpoint(
        f"depth-anything-v2-{size.lower()}", f"Depth Anything V2 {size}",
        f"depth-anything/Depth-Anything-V2-{size}", f"depth_anything_v2_{enc}.pth",
        enc, "v2", False, 20.0, "disparity", *lic)


def _v1(enc: str, size: str) -> KnownCheckpoint:
    return KnownCheckpoint(
        f"depth-anything-v1-{size.lower()}", f"Depth Anything V1 {size}",
        f"LiheYoung/depth_anything_{enc}14", "pytorch_model.bin",
        enc, "v1", False, 20.0, "disparity", *V1_LICENCE)


def _metric(enc: str, size: str, dataset: str, scene: str) -> KnownCheckpoint:
    lic = APACHE if enc == "vits" else CC_BY_NC
    repo_ds = {"hypersim": "Hypersim", "vkitti": "VKITTI"}[dataset]
    return KnownCheckpoint(
        f"depth-anything-v2-metric-{scene}-{size.lower()}",
        f"Depth Anything V2 Metric {scene.capitalize()} ({repo_ds}) {size}",
        f"depth-anything/Depth-Anything-V2-Metric-{repo_ds}-{size}",
        f"depth_anything_v2_metric_{dataset}_{enc}.pth",
        enc, "v2", True, METRIC_MAX_DEPTH[scene], "metric_depth", *lic)


def _build() -> dict[str, KnownCheckpoint]:
    entries = [_v2(e, s) for e, s in _SIZES]
    entries += [_v1(e, s) for e, s in _SIZES]
    entries += [_metric(e, s, "hypersim", "indoor") for e, s in _SIZES]
    entries += [_metric(e, s, "vkitti", "outdoor") for e, s in _SIZES]
    return {c.name: c for c in entries}


KNOWN: dict[str, KnownCheckpoint] = _build()
DEFAULT_NAME = "depth-anything-v2-small"


def get(name: str) -> KnownCheckpoint:
    """The registry entry called `name`; CheckpointError listing the known names otherwise."""
    try:
        return KNOWN[name]
    except KeyError:
        raise CheckpointError(
            f"unknown checkpoint name {name!r}: not a file and not one of the known checkpoints "
            f"({', '.join(KNOWN)}). Pass a path to a checkpoint file or one of these names.") from None


def by_filename(filename: str) -> KnownCheckpoint | None:
    """The entry whose Hub file is called `filename` (None for ambiguous names like pytorch_model.bin)."""
    hits = [c for c in KNOWN.values() if c.filename == filename]
    return hits[0] if len(hits) == 1 else None


def find_cached(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached file for `name` if huggingface_hub's cache holds it; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    entry = get(name)
    hit = try_to_load_from_cache(entry.repo_id, entry.filename, cache_dir=cache_dir)
    return Path(hit) if isinstance(hit, str) else None


def unavailable_message(entry: KnownCheckpoint, reason: str) -> str:
    return (
        f"the weights {entry.filename} from the Hugging Face Hub repo {entry.repo_id} are not cached "
        f"and could not be downloaded ({reason}). Download {entry.url} on a machine with internet "
        f"access and pass the local file instead: --checkpoint /path/to/{entry.filename} "
        f"(Python: load_model('/path/to/{entry.filename}')).")


def resolve(name: str, *, cache_dir: str | os.PathLike | None = None,
            local_files_only: bool = False) -> Path:
    """Local path of a registry checkpoint, downloaded through huggingface_hub's cache if needed.

    Raises WeightsUnavailable (naming repo, file and the --checkpoint alternative) when offline
    (HF_HUB_OFFLINE=1 or no network) and not cached, or when the Hub refuses the download.
    Offline is known from pipeline.weights.hub (one quick probe per process), so it fails at once instead
    of after huggingface_hub's retries.
    """
    from huggingface_hub import hf_hub_download

    entry = get(name)
    # Released files never change, so a cached copy is used without asking the Hub: start-up
    # then costs no network round trip (and no retries when the network is unreachable).
    cached = find_cached(name, cache_dir=cache_dir)
    if cached is not None:
        return cached
    offline = None if local_files_only else hub.offline_reason()
    if offline:
        raise WeightsUnavailable(unavailable_message(entry, f"offline: {offline}"))
    try:
        path = hf_hub_download(entry.repo_id, entry.filename, cache_dir=cache_dir,
                               local_files_only=local_files_only)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # offline, DNS, HTTP 401/404, disk full: all mean "no file"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsUnavailable(unavailable_message(entry, f"{type(e).__name__}: {reason}")) from e
    return Path(path)


def availability(name: str, *, cache_dir: str | os.PathLike | None = None) -> str | None:
    """None when `resolve(name)` can give the weights (cached, or the Hub is reachable); else why not.

    Never downloads and never waits on the network beyond pipeline.weights.hub's one probe per process.
    """
    if find_cached(name, cache_dir=cache_dir) is not None:
        return None
    offline = hub.offline_reason()
    return f"not cached, and the Hub is offline ({offline})" if offline else None
