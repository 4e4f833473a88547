"""The disentangling auto-encoder: content encoder, speaker encoder, AdaIN decoder, and the adversarial classifier.

All modules take and return (B, C, T) tensors. Mels enter normalized per bin (`VoiceConverterNet.normalize`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _halve(x: torch.Tensor) -> torch.Tensor:
    """Residual path of a stride-2 block: (B, C, T) -> (B, C, ceil(T / 2)), the length a stride-2 conv gives."""
    return F.avg_pool1d(x, 2, 2, ceil_mode=True)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-channel normalization over time without affine parameters: removes global statistics.
    (x - mean) / sqrt(var + eps), the biased variance over the time axis, in float32; torch's fused kernel is about
    6x faster on a CPU than the same formula written out."""
    return F.instance_norm(x.float(), eps=eps)


class ContentEncoder(nn.Module):
    """(B, n_mels, T) -> content code (B, content_dim, ceil(T / 2)).

    Instance norm after every convolution strips per-utterance channel statistics (where timbre lives); the narrow
    bottleneck, instance-normalized too, leaves room for little more than what is said.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.conv_in = _conv(cfg.n_mels, c, k)
        self.blocks = nn.ModuleList(_conv(c, c, k, stride=2 if i == 1 else 1) for i in range(cfg.content_blocks))
        self.conv_out = _conv(c, cfg.content_dim, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = _act(instance_norm(self.conv_in(mel)))
        for block in self.blocks:
            h = _act(instance_norm(block(x)))
            x = (_halve(x) if block.stride[0] == 2 else x) + h
        return instance_norm(self.conv_out(x))


class SpeakerEncoder(nn.Module):
    """(B, n_mels, T) -> speaker embedding (B, speaker_dim), pooled over time (mean and standard deviation)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.conv_in = _conv(cfg.n_mels, c, k)
        self.blocks = nn.ModuleList(_conv(c, c, k, stride=2) for _ in range(cfg.speaker_blocks))
        self.proj = nn.Sequential(nn.Linear(2 * c, c), nn.LeakyReLU(0.2), nn.Linear(c, cfg.speaker_dim))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = _act(self.conv_in(mel))
        for block in self.blocks:
            x = _halve(x) + _act(block(x))
        x = x.float()
        stats = torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)
        return self.proj(stats)


class AdaIN(nn.Module):
    """Adaptive instance norm: the speaker embedding sets each channel's scale and shift."""

    def __init__(self, channels: int, speaker_dim: int):
        super().__init__()
        self.affine = nn.Linear(speaker_dim, 2 * channels)

    def forward(self, x: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(spk).unsqueeze(2).chunk(2, dim=1)
        return instance_norm(x) * (1 + gamma) + beta


class Decoder(nn.Module):
    """Content code (B, content_dim, T'), speaker (B, speaker_dim) and, with `cfg.pitch`, the pitch features of
    `vc.pitch.features` (B, 2, frames) -> normalized mel (B, n_mels, frames).

    The pitch enters every block after its AdaIN, so that instance norm cannot remove the register it sets.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.conv_in = _conv(cfg.content_dim, c, k)
        self.low = cfg.decoder_blocks // 2  # blocks at the content rate, before upsampling
        self.convs = nn.ModuleList(_conv(c, c, k) for _ in range(cfg.decoder_blocks))
        self.norms = nn.ModuleList(AdaIN(c, cfg.speaker_dim) for _ in range(cfg.decoder_blocks))
        self.pitch = nn.ModuleList(_conv(2, c, 3) for _ in range(cfg.decoder_blocks)) if cfg.pitch else None
        self.conv_out = _conv(c, cfg.n_mels, k)

    def forward(self, content: torch.Tensor, spk: torch.Tensor, frames: int,
                pitch: torch.Tensor | None = None) -> torch.Tensor:
        if self.pitch is not None:
            if pitch is None:
                raise ValueError("this decoder needs pitch features")
            pitch_low = _halve(pitch.to(content.dtype))[:, :, :content.shape[2]]
        x = self.conv_in(content)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i == self.low:
                x = F.interpolate(x, scale_factor=2, mode="nearest")[:, :, :frames]
            h = norm(conv(x), spk)
            if self.pitch is not None:
                h = h + self.pitch[i](pitch if i >= self.low else pitch_low)
            x = x + _act(h)
        return self.conv_out(x)


class SpeakerClassifier(nn.Module):
    """Names the training speaker from a content code (B, content_dim, T') -> logits (B, n_speakers).

    Trained against the content encoder: its accuracy on held-out utterances is the leakage probe.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, k = cfg.classifier_channels, cfg.kernel_size
        self.net = nn.Sequential(
            _conv(cfg.content_dim, c, k), nn.LeakyReLU(0.2), nn.Dropout(cfg.classifier_dropout),
            _conv(c, c, k, stride=2), nn.LeakyReLU(0.2), nn.Dropout(cfg.classifier_dropout),
            _conv(c, c, k, stride=2), nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(c, cfg.n_speakers)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(content).float().mean(dim=2))


class VoiceConverterNet(nn.Module):
    """The inference network: the three modules plus the per-bin mel statistics of the training data."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.content_encoder = ContentEncoder(cfg)
        self.speaker_encoder = SpeakerEncoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel (B, n_mels, T) -> per-bin standardized mel, the model's input and output space."""
        return (mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        return mel * self.mel_std[:, None] + self.mel_mean[:, None]

    def forward(self, mel: torch.Tensor, ref: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized mels (B, n_mels, T), references (B, n_mels, T_ref) and pitch features (B, 2, T) ->
        normalized mel (B, n_mels, T)."""
        return self.decoder(self.content_encoder(mel), self.speaker_encoder(ref), mel.shape[2], pitch)
