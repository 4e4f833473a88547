"""`vc.training.words`: Whisper's view of the converter's mels, the word loss on it, and the voice loss."""
import numpy as np
import pytest
import torch

from vc import whisper
from vc.audio import log_mel
from vc.config import AudioConfig, ModelConfig
from vc.model import SpeakerEncoder
from vc.training.words import speech_states, voice_loss, whisper_view, word_loss
from vc.whisper import WhisperDims, WhisperEncoder


def _speechlike(seconds: float, f0: float, seed: int) -> np.ndarray:
    """Harmonics of a gliding F0 under a moving formant, with noise bursts: a clip whose bands all move."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))) / 16000
    formant = 700 + 400 * np.sin(2 * np.pi * 2.1 * t)
    wav = sum(np.exp(-((h * f0 - formant) / 500) ** 2) * np.sin(h * phase) for h in range(1, 30))
    wav = wav + 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 3 * t) > 0.5)
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


class _Identity(torch.nn.Module):
    """An encoder whose states are Whisper's view itself, (B, frames, 80): what the word loss compares, laid bare."""
    dims = WhisperDims()

    def forward(self, mel):
        return mel.transpose(1, 2)


def test_whisper_view_of_the_converters_mel_matches_whispers_own_front_end():
    wav = _speechlike(2.0, 140, 0)
    view = whisper_view(log_mel(wav, AudioConfig())[None], AudioConfig())[0]
    own = whisper.log_mel(wav)
    n = min(view.shape[1], own.shape[1])
    assert abs(view.shape[1] - own.shape[1]) <= 1  # the same 10-ms frames
    loud = own[:, :n] > own.max() - 1.0  # where the spectrum is (the view's floor differs from Whisper's clamp)
    assert (view[:, :n] - own[:, :n])[loud].abs().mean() < 0.16  # 0.126; 0.21 with ln taken for log10 power


def test_word_loss_is_zero_for_the_clip_itself_grows_with_other_sounds_and_reaches_the_conversion_only():
    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperDims(n_state=64, n_head=4, n_layer=2)).eval().requires_grad_(False)
    audio = AudioConfig()
    clip = log_mel(_speechlike(1.6, 140, 1), audio)[None]
    near = (clip + 0.05 * torch.randn_like(clip)).requires_grad_(True)
    other = log_mel(_speechlike(1.6, 220, 2), audio)[None]
    assert word_loss(encoder, clip, clip, audio).item() == pytest.approx(0, abs=1e-6)
    small, large = word_loss(encoder, near, clip, audio), word_loss(encoder, other, clip, audio)
    assert 0 < small.item() < large.item()
    small.backward()
    assert near.grad is not None and near.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in encoder.parameters())


def test_in_register_moves_each_items_voiced_log_f0_to_the_other_items_mean():
    from vc.training.converter import in_register

    voiced = torch.tensor([[1.0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    lf0 = torch.tensor([[0.0, 2, 0, 4], [5, 5, 7, 7], [0, 0, 0, 0]]) * voiced
    pitch = torch.stack([lf0, voiced], dim=1)
    moved = in_register(pitch, pitch.roll(1, dims=0))
    # item 0 (voiced mean 2) goes to the last item's register: unvoiced, so it stays; item 1 (mean 6) to item 0's
    torch.testing.assert_close(moved[0], pitch[0])
    torch.testing.assert_close(moved[1, 0], torch.tensor([1.0, 1, 3, 3]))
    torch.testing.assert_close(moved[2], pitch[2])  # nothing voiced: nothing to move
    torch.testing.assert_close(moved[:, 1], voiced)
    assert in_register(None, None) is None


def test_normalized_word_loss_ignores_what_stays_the_same_over_the_segment():
    audio = AudioConfig()
    clip = log_mel(_speechlike(1.6, 140, 1), audio)[None]
    louder = clip + 0.5  # the same sounds, every band 0.5 nepers up: a constant over the segment
    assert word_loss(_Identity(), louder, clip, audio).item() > 0.1
    assert word_loss(_Identity(), louder, clip, audio, normalize=True).item() == pytest.approx(0, abs=1e-4)
    other = log_mel(_speechlike(1.6, 220, 2), audio)[None]
    assert word_loss(_Identity(), other, clip, audio, normalize=True).item() > 0.1


def test_word_loss_on_speech_ignores_what_differs_in_the_pauses_only():
    audio = AudioConfig()
    wav = _speechlike(1.6, 140, 1)
    wav[8000:16000] *= 1e-2  # 0.5 to 1 s 40 dB down: a pause
    clip = log_mel(wav, audio)[None]
    frames = whisper_view(clip, audio).shape[2]  # Whisper's 10-ms frames
    speech = speech_states(clip, 30.0, frames)[0]
    assert speech[:45].all() and speech[105:].all() and not speech[55:95].any()  # the sound heard, the pause not
    noisier = clip.clone()
    noisier[:, :, 44:76] += 1.0  # the pause 9 dB louder (room tone), the speech as it was
    everywhere = word_loss(_Identity(), noisier, clip, audio).item()
    assert everywhere > 0.02
    assert word_loss(_Identity(), noisier, clip, audio, speech_db=30.0).item() < everywhere / 10
    other = log_mel(_speechlike(1.6, 220, 2), audio)[None]  # other sounds in the speech still count
    assert word_loss(_Identity(), other, clip, audio, speech_db=30.0).item() > 0.1


def test_voice_loss_is_zero_in_the_wanted_voice_grows_away_from_it_and_reaches_the_conversion_only():
    torch.manual_seed(0)
    encoder = SpeakerEncoder(ModelConfig(), 80)
    voices = torch.randn(2, 80, 64)
    with torch.no_grad():
        wanted = encoder(voices)
    assert voice_loss(encoder, voices, wanted).item() == pytest.approx(0, abs=1e-5)
    converted = voices.flip(0).clone().requires_grad_(True)  # each in the other's voice
    loss = voice_loss(encoder, converted, wanted)
    assert loss.item() > 1e-3
    loss.backward()
    assert converted.grad is not None and converted.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())  # the encoder cannot meet it by hearing voices alike
