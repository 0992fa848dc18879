"""The feature-alignment term's token mask (pipeline.train.objective) and the student's encoder
initialisation from DINOv2 weights (pipeline.train.student, read through pipeline.weights.loading)."""
from __future__ import annotations

import pickle

import pytest
import torch
from train_helpers import one_thread, scenes_dir_fixture, tiny_config  # noqa: F401

from pipeline.config import PATCH_SIZE, ModelConfig
from pipeline.errors import CheckpointError
from pipeline.model.encoder import DinoV2Encoder
from pipeline.train import student as student_mod
from pipeline.train.batches import Batch
from pipeline.train.objective import per_sample_terms, token_mask

pytestmark = pytest.mark.usefixtures("one_thread")
S = 2 * PATCH_SIZE                     # a 2 x 2 token grid
N, C = 4, 8


# ----------------------------------------------------------------------------- token mask

def _patch(mask: torch.Tensor, token: int, n_valid: int) -> None:
    """Make the first `n_valid` pixels (row-major) of token `token`'s patch valid, the rest not."""
    r, c = divmod(token, 2)
    block = torch.zeros(PATCH_SIZE * PATCH_SIZE, dtype=torch.bool)
    block[:n_valid] = True
    mask[r * PATCH_SIZE:(r + 1) * PATCH_SIZE, c * PATCH_SIZE:(c + 1) * PATCH_SIZE] = block.view(PATCH_SIZE, PATCH_SIZE)


def test_token_counts_when_more_than_half_of_its_patch_is_valid():
    half = PATCH_SIZE * PATCH_SIZE // 2                 # 98 of 196 pixels
    mask = torch.zeros(S, S, dtype=torch.bool)
    for token, n in enumerate((2 * half, half, half + 1, 0)):
        _patch(mask, token, n)
    assert token_mask(mask[None], N).tolist() == [[True, False, True, False]]
    with pytest.raises(ValueError, match="tokens"):
        token_mask(mask[None], 9)


def _batch(masks: torch.Tensor, box: torch.Tensor | None = None, masks_b: torch.Tensor | None = None) -> Batch:
    b = masks.shape[0]
    labels = torch.rand(b, S, S, generator=torch.Generator().manual_seed(1))
    box = torch.ones_like(masks) if box is None else box
    return Batch(images=torch.zeros(b, 3, S, S), labels=labels, masks=masks, labels_b=labels.clone(),
                 masks_b=masks.clone() if masks_b is None else masks_b, box=box,
                 pairs=torch.zeros(b, 1, 5, dtype=torch.long), pseudo=torch.ones(b, dtype=torch.bool),
                 clean=torch.zeros(b, 3, S, S), clean_b=torch.zeros(b, 3, S, S),
                 need_teacher=torch.zeros(b, dtype=torch.bool), need_teacher_b=torch.zeros(b, dtype=torch.bool))


def _feature_loss(feats, frozen, batch, tmp_path):
    cfg = tiny_config(tmp_path / "run", tmp_path, feature_alpha=1.0, ranking_weight=0.0)   # alpha 1: every token
    pred = torch.rand(len(batch), S, S, generator=torch.Generator().manual_seed(2))
    return per_sample_terms(pred, feats, frozen, batch, cfg)["feature"]


def test_features_at_masked_tokens_do_not_change_the_loss(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats, frozen = torch.randn(2, N, C, generator=g), torch.randn(2, N, C, generator=g)
    masks = torch.ones(2, S, S, dtype=torch.bool)
    masks[0, :PATCH_SIZE, :PATCH_SIZE] = False          # image 0: token 0 masked
    masks[1, :, PATCH_SIZE:] = False                    # image 1: tokens 1 and 3 masked
    batch = _batch(masks)
    vals, counted = _feature_loss(feats, frozen, batch, tmp_path)

    moved = feats.clone()
    moved[0, 0] = torch.randn(C, generator=g) * 5
    moved[1, [1, 3]] = torch.randn(2, C, generator=g) * 5
    vals2, _ = _feature_loss(moved, frozen, batch, tmp_path)
    torch.testing.assert_close(vals2, vals, rtol=0, atol=0)

    visible = feats.clone()
    visible[0, 1] = -frozen[0, 1]                       # an unmasked token: the loss must see it
    assert _feature_loss(visible, frozen, batch, tmp_path)[0][0] > vals[0] + 0.1
    cos = torch.nn.functional.cosine_similarity(feats[1, [0, 2]], frozen[1, [0, 2]], dim=-1)
    assert vals[1].item() == pytest.approx(float((1 - cos).mean()), abs=1e-6)
    assert counted.tolist() == [True, True]


def test_cutmix_partner_mask_applies_outside_the_box_and_fully_masked_images_do_not_count(tmp_path):
    g = torch.Generator().manual_seed(3)
    feats, frozen = torch.randn(2, N, C, generator=g), torch.randn(2, N, C, generator=g)
    box = torch.zeros(2, S, S, dtype=torch.bool)
    box[:, :PATCH_SIZE] = True                          # top row of tokens from the own image
    masks_b = torch.ones(2, S, S, dtype=torch.bool)
    masks_b[0, PATCH_SIZE:] = False                     # image 0: partner's (bottom) pixels all masked
    masks = torch.ones(2, S, S, dtype=torch.bool)
    masks[1] = False                                    # image 1: own pixels masked ...
    masks_b[1] = False                                  # ... and the partner's: nothing to align
    vals, counted = _feature_loss(feats, frozen, _batch(masks, box, masks_b), tmp_path)
    cos = torch.nn.functional.cosine_similarity(feats[0, :2], frozen[0, :2], dim=-1)
    assert vals[0].item() == pytest.approx(float((1 - cos).mean()), abs=1e-6)
    assert counted.tolist() == [True, False] and vals[1].item() == 0.0


# ----------------------------------------------------------------------------- encoder init

def _dinov2_file(path, *, swiglu_names: bool = False) -> dict[str, torch.Tensor]:
    """An official-layout DINOv2 file for the tiny vitt encoder (random weights, mask_token kept)."""
    torch.manual_seed(7)
    enc = DinoV2Encoder(ModelConfig(encoder="vitt").spec)
    sd = {k: torch.randn_like(v) for k, v in enc.pretrained.state_dict().items()}
    saved = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1]), **sd}
    if swiglu_names:                                    # vitg's official names for the MLP weights
        saved = {k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v for k, v in saved.items()}
    torch.save(saved, path)
    return sd


@pytest.mark.parametrize("swiglu_names", [False, True])
def test_encoder_init_loads_the_dinov2_weights_into_the_student(tmp_path, scenes_dir, swiglu_names):
    path = tmp_path / "dinov2_vitt.pth"
    expected = _dinov2_file(path, swiglu_names=swiglu_names)
    cfg = tiny_config(tmp_path / "run", scenes_dir, encoder_init=str(path), dinov2=str(path))
    model, origin = student_mod.build_student(cfg)
    got = model.encoder.pretrained.state_dict()
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert origin.startswith("DINOv2 encoder from dinov2_vitt.pth, decoder new") and model.training
    frozen, note = student_mod.build_frozen_dinov2(cfg, model)                   # --dinov2: same reader
    assert all(torch.equal(frozen.pretrained.state_dict()[k], expected[k]) for k in expected)
    assert note == f"dinov2: {path}" and not any(p.requires_grad for p in frozen.parameters())


def test_encoder_weights_are_read_through_pipeline_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "enc.pth"
    _dinov2_file(path)
    calls = []
    real = student_mod.read_checkpoint
    monkeypatch.setattr(student_mod, "read_checkpoint", lambda p: calls.append(p) or real(p))
    student_mod.encoder_state_dict(path)
    assert calls == [path]
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"cls_token": object()}, protocol=2))
    with pytest.raises(CheckpointError, match="evil.pth"):
        student_mod.encoder_state_dict(evil)
    with pytest.raises(CheckpointError, match="not found"):
        student_mod.encoder_state_dict(tmp_path / "missing.pth")
