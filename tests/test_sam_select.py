"""SAM as an optional extra: unavailable offline without weights (saying why), and a tiny random SAM saved
locally runs through the same code path (no download anywhere)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.labels.sam_select import SamSelector, SamUnavailable


def test_missing_weights_are_reported_not_faked(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    sam = SamSelector(str(tmp_path / "no-such-model"))
    a = sam.availability()
    assert not a.ok and "not on this machine" in a.reason
    with pytest.raises(SamUnavailable, match="not on this machine"):
        sam.select(np.zeros((8, 8, 3), np.uint8), [1, 1])


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import torch
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, output_channels=32,
                             image_size=128, patch_size=16, global_attn_indexes=[1], window_size=4, num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    folder = tmp_path_factory.mktemp("tiny-sam")
    transformers.SamModel(transformers.SamConfig(vision_config=vision, prompt_encoder_config=prompt,
                                                 mask_decoder_config=decoder)).save_pretrained(folder)
    transformers.SamProcessor(transformers.SamImageProcessor(
        size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})).save_pretrained(folder)
    return folder


@pytest.mark.slow          # importing transformers and building a model: ~6 s
def test_a_local_sam_answers_a_click_with_a_mask_of_the_image(tiny_sam):
    sam = SamSelector(str(tiny_sam))
    assert sam.availability().ok
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = sam.select(rgb, [30, 40])
    assert mask.shape == (60, 80) and mask.dtype == bool
    with pytest.raises(SamUnavailable, match="outside"):
        sam.select(rgb, [60, 0])
