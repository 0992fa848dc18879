"""The one registry of Depth Anything model configurations.

Every fact about an encoder size (timm name, width, depth, DPT head widths, the blocks the
head is fed from) lives here and nowhere else. `ModelConfig` names one model: encoder size,
version (v1 / v2) and whether its output is metric depth.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError

PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 518
POS_EMBED_GRID = 37          # the released position embeddings cover 518 / 14 = 37 patches a side
INTERPOLATE_OFFSET = 0.1     # DINOv2's offset when resampling the position embedding


@dataclass(frozen=True)
class EncoderSpec:
    name: str                       # vits, vitb, vitl, vitg
    timm_name: str                  # timm architecture (built without pretrained weights)
    embed_dim: int
    depth: int
    features: int                   # DPT head width
    out_channels: tuple[int, ...]   # DPT projection widths, shallow to deep
    v2_layers: tuple[int, ...]      # blocks tapped by V2 (V1 taps the last four)
    num_heads: int | None = None    # only set where it differs from the timm architecture's
    public: bool = True             # False: a tiny size for tests and CPU experiments, no released weights

    @property
    def v1_layers(self) -> tuple[int, ...]:
        return tuple(range(self.depth - 4, self.depth))


ENCODERS: dict[str, EncoderSpec] = {
    "vits": EncoderSpec("vits", "vit_small_patch14_dinov2", 384, 12, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "vitb": EncoderSpec("vitb", "vit_base_patch14_dinov2", 768, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "vitl": EncoderSpec("vitl", "vit_large_patch14_dinov2", 1024, 24, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
    "vitg": EncoderSpec("vitg", "vit_giant_patch14_dinov2", 1536, 40, 384, (1536, 1536, 1536, 1536), (9, 19, 29, 39)),
    # Not a released size: a 4-block, 64-wide DINOv2-shaped network so that tests and CPU
    # demonstrations of training run in seconds. Same code path as the real sizes.
    "vitt": EncoderSpec("vitt", "vit_small_patch14_dinov2", 64, 4, 16, (8, 16, 32, 64), (0, 1, 2, 3),
                        num_heads=2, public=False),
}
VERSIONS = ("v1", "v2")
METRIC_MAX_DEPTH = {"indoor": 20.0, "outdoor": 80.0}


@dataclass(frozen=True)
class ModelConfig:
    """What a Depth Anything network is. Stored with every checkpoint the project writes."""

    encoder: str = "vits"
    version: str = "v2"
    metric: bool = False
    max_depth: float = 20.0

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        if self.version not in VERSIONS:
            raise ConfigError(f"unknown version {self.version!r}; choose v1 or v2")
        if self.metric and self.version != "v2":
            raise ConfigError("metric models exist only for version v2")
        if not (self.max_depth > 0):
            raise ConfigError(f"max_depth must be positive, got {self.max_depth!r}")

    @property
    def spec(self) -> EncoderSpec:
        return ENCODERS[self.encoder]

    @property
    def layers(self) -> tuple[int, ...]:
        return self.spec.v2_layers if self.version == "v2" else self.spec.v1_layers

    @property
    def output_kind(self) -> str:
        """'metric_depth' (metres) for metric models, else 'disparity' (affine-invariant)."""
        return "metric_depth" if self.metric else "disparity"

    @property
    def align_corners_out(self) -> bool:
        """How the official code resizes the output back to the image: V2 align_corners=True, V1 False."""
        return self.version == "v2"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in ("encoder", "version", "metric", "max_depth") if k in d}
        return cls(**known)
