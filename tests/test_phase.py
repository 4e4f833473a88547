import math

import numpy as np
import pytest
import torch

from vc.audio import hann_window, log_mel, stft
from vc.config import AudioConfig, Config, VocoderConfig
from vc.errors import VCError
from vc.phase import derivatives, pghi
from vc.vocoder import NeuralVocoder, Vocos, load_vocoder, vocoder_weights

from conftest import synth_speech

AUDIO = AudioConfig()
SMALL = VocoderConfig(dim=32, layers=2, intermediate=64)


def spectrum(seconds: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    wav = torch.from_numpy(synth_speech(150, seconds))
    return wav, stft(wav[None], AUDIO)[0]


def wrapped(x: np.ndarray) -> np.ndarray:
    return np.abs(np.angle(np.exp(1j * x)))


def test_phase_derivatives_from_the_magnitude_match_the_true_ones_where_it_is_loud():
    _, spec = spectrum()
    log_mag = torch.log(spec.abs().clamp(min=1e-9)).double().numpy()
    phase = spec.angle().double().numpy()
    advance, step = derivatives(log_mag, AUDIO)
    loud = log_mag > log_mag.max() - 3
    # trapezoidal rule between neighbours, as the integration uses them; a random phase errs by pi / 2 on average
    along_time = wrapped(phase[:, 1:] - phase[:, :-1] - 0.5 * (advance[:, 1:] + advance[:, :-1]))
    along_freq = wrapped(phase[1:] - phase[:-1] - 0.5 * (step[1:] + step[:-1]))
    assert along_time[loud[:, 1:] & loud[:, :-1]].mean() < 0.3
    assert along_freq[loud[1:] & loud[:-1]].mean() < 0.3


def inconsistency(wav: torch.Tensor, spec: torch.Tensor, phase: torch.Tensor) -> float:
    """How far the STFT of the waveform made from |spec| and `phase` is from |spec| (0: a consistent spectrogram)."""
    y = torch.istft(torch.polar(spec.abs(), phase), AUDIO.n_fft, AUDIO.hop_length, AUDIO.win_length,
                    hann_window(AUDIO.win_length), center=True, length=len(wav))
    again = stft(y[None], AUDIO)[0].abs()
    return float(torch.linalg.norm(again - spec.abs()) / torch.linalg.norm(spec.abs()))


def test_pghi_makes_a_phase_consistent_with_the_magnitude():
    wav, spec = spectrum()
    phase = pghi(torch.log(spec.abs().clamp(min=1e-9)), AUDIO)
    assert phase.shape == spec.shape and phase.dtype == torch.float32
    random = (torch.rand(spec.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * math.pi
    assert inconsistency(wav, spec, phase) < 0.1 < 0.5 < inconsistency(wav, spec, random)


def test_pghi_is_deterministic_and_keeps_the_given_first_frames():
    _, spec = spectrum()
    log_mag = torch.log(spec.abs().clamp(min=1e-9))[:, 40:]  # from the middle of the sound: no silent start
    first = pghi(log_mag, AUDIO)
    torch.testing.assert_close(pghi(log_mag, AUDIO), first)
    init = first[:, :5] + 1.0
    joined = pghi(log_mag, AUDIO, init=init)
    torch.testing.assert_close(joined[:, :5], init)
    # the rest continues from them: every loud bin after them is integrated from them, so it moves by the same 1.0
    loud = (log_mag > log_mag.max() - 3)[:, 5:]
    assert loud.sum() > 500
    moved = wrapped((joined - first - 1.0)[:, 5:].double().numpy())[loud.numpy()]
    assert moved.max() < 1e-3


def test_neural_vocoder_takes_the_phase_from_pghi_unless_streaming():
    net = Vocos(AUDIO, SMALL)
    assert NeuralVocoder(net).phase == "pghi" and NeuralVocoder(net).carries_phase
    causal = Vocos(AUDIO, VocoderConfig(dim=32, layers=2, intermediate=64, causal=True))
    assert NeuralVocoder(causal).phase == "network" and not NeuralVocoder(causal).carries_phase
    with pytest.raises(VCError, match="unknown phase 'minimum'"):
        NeuralVocoder(net, phase="minimum")
    with pytest.raises(VCError, match="griffin-lim makes its own phase"):
        load_vocoder("griffin-lim", Config(audio=AUDIO, vocoder=SMALL), phase="pghi")

    mel = log_mel(synth_speech(150, 0.5), AUDIO)
    voc = load_vocoder("vocos", Config(audio=AUDIO, vocoder=SMALL), vocoder_weights(net), bf16=False)
    wav, phases = voc(mel, 8000, return_phase=True)
    assert wav.shape == (8000,) and phases.shape == (AUDIO.n_fft // 2 + 1, mel.shape[1])
    torch.testing.assert_close(phases.abs(), torch.ones(phases.shape))
    # the network's own phase is what the network computes
    voc.phase = "network"
    torch.testing.assert_close(voc(mel, 8000), net.eval()(mel[None], 8000)[0])
