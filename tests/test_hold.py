"""`train.code_hold` (`vc.training.hold`): the content code of a clip's pauses held where the run began."""
from __future__ import annotations

import torch

from vc.training.hold import CodeAnchor


def _halving_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv1d(80, 8, kernel_size=2, stride=2)  # two mel frames per code frame, as the content encoder


def _half_speech_clip() -> torch.Tensor:
    clip = torch.full((1, 80, 64), -12.0)  # natural-log mels: the second half about 100 dB under the first
    clip[:, :, :32] = torch.randn(1, 80, 32) * 0.5
    return clip


def test_code_hold_counts_the_code_of_the_pauses_only():
    encoder, clip = _halving_encoder(), _half_speech_clip()
    anchor = CodeAnchor(encoder, speech_db=30.0)
    code = encoder(clip).detach()
    speech, pause = code.clone(), code.clone()
    speech[:, :, :16] += 1.0  # code frames 0-15 hear the speech (mel frames 0-31)
    pause[:, :, 16:] += 1.0
    assert anchor.loss(clip, code, clip).item() < 1e-6
    assert anchor.loss(clip, speech, clip).item() < 1e-6  # the speech's code is free to move
    torch.testing.assert_close(anchor.loss(clip, pause, clip), torch.tensor(1.0))
    every = CodeAnchor(encoder, speech_db=0.0)  # 0: every frame is held
    torch.testing.assert_close(every.loss(clip, speech, clip), torch.tensor(0.5))


def test_code_hold_anchor_is_a_frozen_copy_restored_from_its_state():
    encoder, clip = _halving_encoder(), _half_speech_clip()
    anchor = CodeAnchor(encoder, speech_db=30.0)
    start = encoder(clip).detach()
    with torch.no_grad():
        encoder.weight.add_(0.1)  # training moves the encoder; the anchor keeps the code it began with
    assert not any(p.requires_grad for p in anchor.encoder.parameters())
    assert anchor.loss(clip, start, clip).item() < 1e-6
    moved = encoder(clip)
    assert anchor.loss(clip, moved, clip).item() > 1e-3
    resumed = CodeAnchor(encoder, speech_db=30.0, state=anchor.state())  # a resumed run: the saved anchor
    assert resumed.loss(clip, start, clip).item() < 1e-6
    loss = resumed.loss(clip, moved, clip)
    loss.backward()  # the gradient reaches the trained encoder, not the anchor
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in resumed.encoder.parameters())


def test_code_hold_clean_is_refused_without_a_hold():
    import pytest

    from vc.config import TrainConfig
    from vc.errors import VCError

    with pytest.raises(VCError, match="code_hold_clean must be false while code_hold is 0"):
        TrainConfig(code_hold_clean=True)
    assert TrainConfig(code_hold_clean=True, code_hold=1.0).code_hold_clean


def test_voice_hold_is_refused_with_speaker_warp():
    import pytest

    from vc.config import TrainConfig
    from vc.errors import VCError

    with pytest.raises(VCError, match="voice_hold"):
        TrainConfig(voice_hold=1.0, speaker_warp=0.1)
    with pytest.raises(VCError, match="voice_hold"):
        TrainConfig(voice_hold=-1.0)
    assert TrainConfig(voice_hold=1.0).voice_hold == 1.0
