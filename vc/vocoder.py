"""Mel to waveform: a Vocos-style neural vocoder trained in this project, and Griffin-Lim (no training) as fallback.

Where the output's F0 is known (a conversion's, moved to the target's register), the neural vocoder's phase in voiced
frames below `convert.harmonic_phase` Hz is replaced by the phase of that F0's harmonics (`harmonic_phase`): the
network predicts the magnitude well, its phase is what the listener hears as roughness."""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .audio import LOG_FLOOR, hann_window, mel_filterbank, stft
from .config import VOCODERS, AudioConfig, Config, VocoderConfig
from .errors import VCError
from .checkpoint import float32
from .model import CausalConv1d
from .runtime import fast_bf16

MAX_LOG_MAGNITUDE = math.log(100.0)  # STFT magnitudes above 100 (40 dB over full scale) are clamped, as in Vocos


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, kernel_size: int, layer_scale: float, causal: bool = False):
        super().__init__()
        self.dwconv = (CausalConv1d(dim, dim, kernel_size, groups=dim) if causal else
                       nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim, T)
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class Vocos(nn.Module):
    """Log-mel (B, n_mels, frames) -> STFT (B, n_fft // 2 + 1, frames) -> waveform, after Siuzdak (2023).

    Every network layer runs at the mel frame rate (80 per second), which is what makes it fast on a CPU; the inverse
    STFT uses the same framing as `log_mel`, so frame k of the input is frame k of the output.
    """

    def __init__(self, audio: AudioConfig, cfg: VocoderConfig):
        super().__init__()
        self.audio, self.cfg = audio, cfg
        self.embed = (CausalConv1d(audio.n_mels, cfg.dim, cfg.kernel_size) if cfg.causal else
                      nn.Conv1d(audio.n_mels, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel_size, 1 / cfg.layers,
                                                  cfg.causal) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, 2 * (audio.n_fft // 2 + 1))
        # log-mel statistics of the training audio (set by training) so that the input is roughly zero-mean, unit-var
        self.register_buffer("mel_mean", torch.tensor(-5.0))
        self.register_buffer("mel_std", torch.tensor(2.5))

    def spectrum(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> log magnitude and phase, each (B, n_fft // 2 + 1, frames), in float32."""
        x = self.embed((mel - self.mel_mean) / self.mel_std)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).float()
        log_mag, phase = x.chunk(2, dim=1)
        return log_mag.clamp(max=MAX_LOG_MAGNITUDE), phase

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor, length: int | None = None) -> torch.Tensor:
        a = self.audio
        spec = torch.polar(torch.exp(log_mag), phase)
        length = length or (spec.shape[-1] - 1) * a.hop_length
        return torch.istft(spec, a.n_fft, a.hop_length, a.win_length, hann_window(a.win_length).to(spec.device),
                           center=True, length=length)

    def forward(self, mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, n_mels, frames) -> (B, length), length defaulting to (frames - 1) * hop."""
        return self.synthesize(*self.spectrum(mel), length)


def f0_phase(f0: torch.Tensor, audio: AudioConfig, start: float = 0.0) -> torch.Tensor:
    """F0 (frames,) in Hz, 0 where unvoiced -> the phase of the fundamental at each frame's centre (radians, float64):
    `start` at frame 0, then F0 integrated over each hop (trapezoids; an unvoiced frame counts as 0 Hz)."""
    f0 = f0.double()
    step = torch.pi * (f0[1:] + f0[:-1]) * audio.hop_length / audio.sample_rate
    return torch.cat([f0.new_full((1,), start), start + torch.cumsum(step, 0)])


def harmonic_phase(phase: torch.Tensor, f0: torch.Tensor, audio: AudioConfig, cutoff: float,
                   fundamental: torch.Tensor | None = None) -> torch.Tensor:
    """The STFT phase (n_fft // 2 + 1, frames) with every bin below `cutoff` Hz of a voiced frame (`f0` > 0, Hz)
    replaced by the phase of the harmonic h of F0 nearest to it: h times the fundamental's phase (`f0_phase`, or
    `fundamental` where given), plus pi per bin for `stft`'s frame origin, which lies half an FFT before the centre.
    The harmonics then stay coherent from frame to frame whatever the magnitude looks like, as a sinusoidal
    synthesizer's do (cf. Krawczyk and Gerkmann 2014, STFT phase reconstruction in voiced speech). Other bins and
    frames keep `phase`."""
    frames = phase.shape[1]
    f0 = torch.nn.functional.pad(f0.double()[:frames], (0, max(0, frames - len(f0))))
    fundamental = f0_phase(f0, audio) if fundamental is None else fundamental.double()[:frames]
    # h * phase mod 2 pi needs only the phase mod 2 pi (h is whole), which float32 then holds to 1e-4 rad for h < 100
    turn = torch.remainder(fundamental, 2 * torch.pi).to(phase.dtype)
    low = min(phase.shape[0], math.ceil(cutoff * audio.n_fft / audio.sample_rate))  # the bins below the cutoff
    bins = torch.arange(low, device=phase.device)
    hz = bins.to(phase.dtype) * (audio.sample_rate / audio.n_fft)
    f0 = f0.to(phase.dtype)
    h = torch.round(hz[:, None] / f0.clamp(min=1.0)[None]).clamp(min=1.0)
    harmonics = h * turn[None] + torch.pi * (bins % 2).to(phase.dtype)[:, None]  # -pi k and +pi k agree mod 2 pi
    return torch.cat([torch.where((f0 > 0)[None], harmonics, phase[:low]), phase[low:]])


class NeuralVocoder:
    """`Vocos` behind the same call as `GriffinLim`: log-mel (n_mels, frames) -> waveform (length,).

    The network runs under bf16 autocast where that is fast (`fast_bf16`); the inverse STFT stays in float32. Given
    the output's F0 and a cutoff, voiced frames take the harmonics' phase below it (`harmonic_phase`)."""

    def __init__(self, net: Vocos, bf16: bool | None = None):
        self.net = net.eval()
        self.bf16 = fast_bf16() if bf16 is None else bf16

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor, length: int | None = None, f0: torch.Tensor | None = None,
                 cutoff: float = 0.0, fundamental: torch.Tensor | None = None) -> torch.Tensor:
        """`f0` (frames,) in Hz and `cutoff` in Hz: see `harmonic_phase` (`fundamental`: its phase track, where a
        caller carries one across chunks)."""
        device = next(self.net.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            log_mag, phase = self.net.spectrum(mel.float().to(device)[None])
        if f0 is not None and cutoff > 0:
            phase = harmonic_phase(phase[0], f0.to(device), self.net.audio, cutoff,
                                   None if fundamental is None else fundamental.to(device))[None]
        return self.net.synthesize(log_mag, phase, length)[0].cpu()


def vocoder_weights(net: Vocos) -> dict[str, torch.Tensor]:
    """The vocoder entry of a file: its weights (its architecture is the file's `Config.vocoder`)."""
    return {k: v.detach().float().clone() for k, v in net.state_dict().items()}


def build_vocoder(weights: dict[str, torch.Tensor], cfg: Config) -> Vocos:
    with torch.device("meta"):  # no random initialization of weights that the file replaces
        net = Vocos(cfg.audio, cfg.vocoder)
    net.load_state_dict(float32(weights), assign=True)
    return net.eval()


@functools.lru_cache(maxsize=8)
def _inverse_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    return torch.linalg.pinv(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


class GriffinLim:
    """Log-mel (n_mels, frames) -> waveform (samples,), by the fast Griffin-Lim algorithm (Perraudin et al. 2013).

    The linear magnitude is the filterbank's pseudo-inverse applied to the mel magnitude, floored at zero.
    """

    def __init__(self, cfg: AudioConfig, n_iter: int = 64, momentum: float = 0.99, power: float = 1.0):
        self.cfg, self.n_iter, self.momentum, self.power = cfg, n_iter, momentum, power

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        inv = _inverse_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax).to(mel.device)
        # power > 1 sharpens formants at the cost of level accuracy; 1.0 keeps log_mel(output) close to the input
        return (inv @ torch.exp(mel.float())).clamp(min=LOG_FLOOR) ** self.power

    def __call__(self, mel: torch.Tensor, length: int | None = None, init: torch.Tensor | None = None,
                 return_phase: bool = False):
        """mel (n_mels, frames) -> waveform (length,). `init`: unit phases (F, n) for the first n frames, e.g. the
        end of the previous chunk, so that consecutive chunks join in phase. With `return_phase`, also the final
        unit phases (F, frames)."""
        c = self.cfg
        mag = self.magnitude(mel)
        length = length or (mag.shape[-1] - 1) * c.hop_length
        window = hann_window(c.win_length).to(mag.device)
        gen = torch.Generator().manual_seed(0)  # the same mel always gives the same audio
        angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
        if init is not None:
            n = min(init.shape[-1], angles.shape[-1])
            angles[:, :n] = init[:, :n]
        previous = torch.zeros_like(angles)

        def istft(spec: torch.Tensor) -> torch.Tensor:
            return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, window, center=True, length=length)

        for _ in range(self.n_iter):
            rebuilt = stft(istft(mag * angles), c)
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            angles = angles / angles.abs().clamp(min=1e-8)
            previous = rebuilt
        wav = istft(mag * angles)
        return (wav, angles) if return_phase else wav


def load_vocoder(name: str, cfg: Config, weights: dict | None = None, **kwargs) -> GriffinLim | NeuralVocoder:
    """`name` from VOCODERS; "vocos" needs `weights`, the vocoder entry of a checkpoint (architecture: `cfg.vocoder`).
    """
    if name == "griffin-lim":
        return GriffinLim(cfg.audio, **kwargs)
    if name == "vocos":
        if weights is None:
            raise VCError("this checkpoint has no neural vocoder; use --vocoder griffin-lim")
        try:
            return NeuralVocoder(build_vocoder(weights, cfg), **kwargs)
        except (KeyError, TypeError, RuntimeError, AttributeError) as e:
            raise VCError(f"the checkpoint's vocoder does not match this vc ({str(e).splitlines()[0][:200]})") from None
    raise VCError(f"unknown vocoder '{name}' (choose from: {', '.join(VOCODERS)})")
