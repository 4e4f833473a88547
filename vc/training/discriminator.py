"""Discriminators and GAN losses for adversarial vocoder training (`vc train-vocoder --adversarial`), and a mel
discriminator for the converter's decoder (`train.mel_gan`).

A multi-resolution discriminator (MRD: UnivNet, Jang et al. 2021, as used by Vocos): 2-D convolutions over STFT
magnitudes at three resolutions; optionally a multi-period discriminator (MPD: HiFi-GAN, Kong et al. 2020):
convolutions along time over the waveform folded by periods 2, 3, 5, 7 and 11. Both are narrow (`channels`, 16 by
default, where the papers have 32 and up to 1024) and strided early, so that a training step on a CPU costs about
twice a step without them (the MRD; the MPD adds about half a step more).

Losses as in Vocos: hinge (or least-squares, HiFi-GAN's) adversarial losses averaged over the sub-discriminators, and
feature matching: L1 between the feature maps of real and generated audio, summed over layers, averaged over the
sub-discriminators.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ..audio import hann_window
from ..errors import VCError

MRD_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop), UnivNet's and Vocos's (at 16 kHz here)
MPD_PERIODS = (2, 3, 5, 7, 11)
SLOPE = 0.1  # leaky ReLU
GAN_LOSSES = ("hinge", "lsgan")

Outputs = list[tuple[torch.Tensor, list[torch.Tensor]]]  # per sub-discriminator: logits, feature maps


def _conv(c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel[0] // 2, kernel[1] // 2)))


def _conv1d(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv1d:
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, stride, padding=kernel // 2))


class _ConvStack(nn.Module):
    """Leaky-ReLU convolutions, then a 1-channel output convolution: (B, 1, ...) -> logits (B, n), feature maps."""

    def __init__(self, convs: list[nn.Module], post: nn.Module):
        super().__init__()
        self.convs, self.post = nn.ModuleList(convs), post

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class ResolutionDiscriminator(_ConvStack):
    """One MRD member: the STFT magnitude (B, 1, frames, bins) at one (n_fft, hop). UnivNet's layers (kernels 3 x 9,
    then 3 x 3), strided along frequency from the first layer and along time too after it: about 3x cheaper than
    UnivNet's strides (along one axis, from the second layer)."""

    def __init__(self, n_fft: int, hop: int, channels: int):
        c = channels
        super().__init__([_conv(1, c, (3, 9), (1, 2)), *(_conv(c, c, (3, 9), (2, 2)) for _ in range(3)),
                          _conv(c, c, (3, 3))], _conv(c, 1, (3, 3)))
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann_window(n_fft), persistent=False)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        mag = torch.stft(wav.float(), self.n_fft, self.hop, self.n_fft, self.window, center=True,
                         return_complex=True).abs()
        return super().forward(mag.transpose(1, 2)[:, None])


class PeriodDiscriminator(_ConvStack):
    """One MPD member: the waveform folded by `period`, each of the `period` columns (B x period, 1, samples / period)
    convolved alone along time, as HiFi-GAN's (k, 1) kernels do (as 1-D convolutions: faster on a CPU)."""

    def __init__(self, period: int, channels: int):
        widths = (channels // 2, channels, 2 * channels, 2 * channels)
        convs = [_conv1d(c_in, c_out, 5, 3) for c_in, c_out in zip((1, *widths[:-1]), widths)]
        super().__init__([*convs, _conv1d(widths[-1], widths[-1], 5)], _conv1d(widths[-1], 1, 3))
        self.period = period

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, p = wav.shape[0], self.period
        x = F.pad(wav.float()[:, None], (0, -wav.shape[-1] % p), mode="reflect")
        logits, features = super().forward(x.view(b, -1, p).transpose(1, 2).reshape(b * p, 1, -1))
        return logits.reshape(b, -1), features


class MelDiscriminator(nn.Module):
    """Real or decoded? 2-D convolutions over patches of a normalized log-mel (B, n_mels, frames), strided along
    frequency and time: a decoder trained against it cannot settle for the over-smoothed mean of what it might paint
    (the fine structure across bands and frames that an L1 loss averages away). One member, as `Outputs`."""

    def __init__(self, channels: int = 16):
        super().__init__()
        c = channels
        self.stack = _ConvStack([_conv(1, c, (3, 3)), _conv(c, 2 * c, (3, 3), (2, 2)),
                                 _conv(2 * c, 2 * c, (3, 3), (2, 2)), _conv(2 * c, 2 * c, (3, 3), (2, 1))],
                                _conv(2 * c, 1, (3, 3)))

    def forward(self, mel: torch.Tensor) -> Outputs:
        return [self.stack(mel.float()[:, None])]


class Discriminator(nn.Module):
    """The MRD, and the MPD with `periods`: waveform (B, samples) -> per sub-discriminator, logits and feature maps.
    """

    def __init__(self, channels: int = 16, periods: tuple[int, ...] = (),
                 resolutions: tuple[tuple[int, int], ...] = MRD_RESOLUTIONS):
        super().__init__()
        self.members = nn.ModuleList([*(ResolutionDiscriminator(n, h, channels) for n, h in resolutions),
                                      *(PeriodDiscriminator(p, channels) for p in periods)])

    def forward(self, wav: torch.Tensor) -> Outputs:
        return [member(wav) for member in self.members]


def discriminator_loss(real: Outputs, fake: Outputs, kind: str = "hinge") -> torch.Tensor:
    """Real logits pushed up, generated ones down; the mean over sub-discriminators."""
    total = 0.0
    for (r, _), (g, _) in zip(real, fake):
        if kind == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + g).mean()
        else:
            total = total + ((1 - r) ** 2).mean() + (g ** 2).mean()
    return total / len(real)


def generator_loss(fake: Outputs, kind: str = "hinge") -> torch.Tensor:
    """Generated logits pushed up; the mean over sub-discriminators."""
    total = 0.0
    for g, _ in fake:
        total = total + (F.relu(1 - g).mean() if kind == "hinge" else ((1 - g) ** 2).mean())
    return total / len(fake)


def feature_matching(real: Outputs, fake: Outputs) -> torch.Tensor:
    """L1 between the feature maps of real (taken as constants) and generated audio: summed over layers, averaged
    over sub-discriminators."""
    total = 0.0
    for (_, r_maps), (_, g_maps) in zip(real, fake):
        for r, g in zip(r_maps, g_maps):
            total = total + F.l1_loss(g, r.detach())
    return total / len(real)


class Adversary:
    """The discriminator's side of adversarial training: the network, its optimizer, and one forward of it on real
    and generated audio that serves both updates. The generator's adversarial terms are taken against the
    discriminator before its update (a step behind HiFi-GAN's order), which saves two of its four passes a step."""

    def __init__(self, channels: int = 16, periods: tuple[int, ...] = (), lr: float = 2e-4, kind: str = "hinge",
                 state: dict[str, Any] | None = None, net: nn.Module | None = None):
        """`net`: another discriminator than the waveform one (`MelDiscriminator`); `channels` and `periods` are then
        unused. `state`: from `state()`, to resume."""
        if kind not in GAN_LOSSES:
            raise VCError(f"unknown GAN loss '{kind}' (choose from: {', '.join(GAN_LOSSES)})")
        self.kind = kind
        self.net = net if net is not None else Discriminator(channels, periods)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.01)
        if state is not None:
            self.net.load_state_dict(state["weights"])
            self.opt.load_state_dict(state["optimizer"])

    def losses(self, fake: torch.Tensor, real: torch.Tensor, generator: bool, bf16: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Generated and real waveforms (B, samples), or log-mels for a `MelDiscriminator` -> the discriminator's
        loss, and with `generator` the generator's adversarial and feature-matching losses (else None, and `fake` is
        detached). `bf16`: autocast on the device the inputs are on."""
        self.net.train()
        with torch.autocast(fake.device.type, dtype=torch.bfloat16, enabled=bf16):
            real_out = _float(self.net(real))
            fake_out = _float(self.net(fake if generator else fake.detach()))
        d_loss = discriminator_loss(real_out, fake_out, self.kind)
        if not generator:
            return d_loss, None, None
        return d_loss, generator_loss(fake_out, self.kind), feature_matching(real_out, fake_out)

    def update(self, d_loss: torch.Tensor, lr: float) -> None:
        """One optimizer step on `d_loss`, whose graph may go on into the generator (left as it is)."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward(inputs=list(self.net.parameters()))
        self.opt.step()

    def state(self) -> dict[str, Any]:
        return {"weights": self.net.state_dict(), "optimizer": self.opt.state_dict()}


def _float(outputs: Outputs) -> Outputs:
    return [(logits.float(), [f.float() for f in features]) for logits, features in outputs]
