"""The disentangling auto-encoder: content encoder, speaker encoder, AdaIN decoder, and the adversarial classifier.

All modules take and return (B, C, T) tensors. Mels enter normalized per bin (`VoiceConverterNet.normalize`); the
content encoder reads them too, or with `content_features: whisper` a frozen Whisper encoder's states (`vc.content`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .whisper import WhisperDims, WhisperEncoder


class CausalConv1d(nn.Conv1d):
    """A convolution that sees `lookahead` future frames and k - 1 - lookahead past ones (zero-padded): output frame j
    of a stride-s layer depends on input frames up to s * j + lookahead only, so it can run on a stream."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, lookahead: int = 0, groups: int = 1):
        super().__init__(cin, cout, k, stride=stride, groups=groups)
        self.left, self.right = k - 1 - lookahead, lookahead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, self.right)))  # ceil(T / stride) frames, as centred padding gives


def _conv(cin: int, cout: int, k: int, stride: int = 1, causal: bool = False, lookahead: int = 0) -> nn.Conv1d:
    if causal:
        return CausalConv1d(cin, cout, k, stride, lookahead)
    return nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _halve(x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Residual path of a stride-2 block: (B, C, T) -> (B, C, ceil(T / 2)), the length a stride-2 conv gives.
    Frame j is the mean of frames 2j and 2j + 1, or with `causal` of 2j - 1 and 2j."""
    if causal:
        return F.avg_pool1d(F.pad(x, (1, 0)), 2, 2)
    return F.avg_pool1d(x, 2, 2, ceil_mode=True)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-channel normalization over time without affine parameters: removes global statistics.
    (x - mean) / sqrt(var + eps), the biased variance over the time axis, in float32; torch's fused kernel is about
    6x faster on a CPU than the same formula written out."""
    return F.instance_norm(x.float(), eps=eps)


def window_norm(x: torch.Tensor, window: int, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm with each frame's statistics taken over the `window` frames up to and including it: a causal
    instance norm, which a stream computes exactly as it goes (`vc.stream`). Window sums are differences of running
    sums (slices, no gathers: 3x faster in training); in float64 at inference, where clips run for minutes, and in
    float32 under autograd, where segments are a few seconds (the two differ by under 1e-2 on the first frames)."""
    d = x.double() if not torch.is_grad_enabled() else x.float()
    t = d.shape[2]
    n = torch.arange(1, t + 1, dtype=d.dtype, device=d.device).clamp(max=window)

    def window_sum(v: torch.Tensor) -> torch.Tensor:
        c = F.pad(v.cumsum(2), (1, 0))  # c[k]: the sum of the first k frames
        return c[:, :, 1:] - F.pad(c, (window - 1, 0))[:, :, :t]

    mean = window_sum(d) / n
    var = (window_sum(d * d) / n - mean * mean).clamp(min=0)
    return ((d - mean) / (var + eps).sqrt()).float()


def channel_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each frame of (B, C, T) normalized over its channels, without affine parameters (`model.norm: channel`). The
    channel count is a constant of the layer (`int`: an ONNX export traces it as one, not as a shape lookup)."""
    return F.layer_norm(x.float().transpose(1, 2), (int(x.shape[1]),), eps=eps).transpose(1, 2)


def _norm(window: int, kind: str = "instance"):
    """The normalization of a layer: each frame over its channels (kind "channel"), instance norm over the whole
    clip (window 0) or over a causal window of frames, or none (kind "none": float32, as the others return)."""
    if kind == "channel":
        return channel_norm
    if kind == "none":
        return lambda x: x.float()
    return instance_norm if window <= 0 else (lambda x: window_norm(x, window))


class VectorQuantizer(nn.Module):
    """A codebook of `size` units: each frame of a content code (B, dim, T) is replaced by its nearest unit, with the
    straight-through estimator (the gradient passes as if nothing had been replaced). In training, `losses` holds
    the codebook term (units pulled toward the frames they stand for) and the commitment term (frames pulled toward
    their unit), and units no frame chose for a while restart on a random frame of the batch (dead-code restart,
    as in Jukebox), so that the whole codebook stays in use."""

    def __init__(self, size: int, dim: int, decay: float = 0.99):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(size, dim))
        self.decay = decay
        self.register_buffer("usage", torch.ones(size))  # a running mean of how often each unit is chosen
        self.losses: tuple[torch.Tensor, torch.Tensor] | None = None
        self.perplexity = 0.0

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, dim, T) -> the index of each frame's nearest unit (B, T)."""
        flat = z.transpose(1, 2).reshape(-1, z.shape[1])
        book = self.codebook.float()
        dist = (flat * flat).sum(1, keepdim=True) - 2 * flat @ book.T + (book * book).sum(1)[None]
        return dist.argmin(dim=1).view(z.shape[0], z.shape[2])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        idx = self.codes(z)
        q = F.embedding(idx, self.codebook.float()).transpose(1, 2)  # (B, dim, T)
        if self.training and self.codebook.requires_grad and torch.is_grad_enabled():
            self.losses = (F.mse_loss(q, z.detach()), F.mse_loss(z, q.detach()))
            with torch.no_grad():
                counts = torch.bincount(idx.flatten(), minlength=self.codebook.shape[0]).float()
                p = counts / counts.sum()
                self.perplexity = float(torch.exp(-(p * (p + 1e-10).log()).sum()))
                self.usage.mul_(self.decay).add_(p * (1 - self.decay) * len(p))
                dead = torch.nonzero(self.usage < 0.03).flatten()
                if len(dead):
                    frames = z.detach().transpose(1, 2).reshape(-1, z.shape[1])
                    pick = torch.randint(0, frames.shape[0], (len(dead),), device=z.device)
                    self.codebook.data[dead] = frames[pick].to(self.codebook.dtype)
                    self.usage[dead] = 1.0
        return z + (q - z).detach()


class ContentEncoder(nn.Module):
    """Content input (B, n_mels or the Whisper states' dim, T) -> content code (B, content_dim, ceil(T / 2)).

    Instance norm after every convolution strips per-utterance channel statistics (where timbre lives); the narrow
    bottleneck, instance-normalized too, leaves room for little more than what is said.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int):
        super().__init__()
        c, k, causal = cfg.channels, cfg.kernel_size, cfg.causal
        self.causal = causal
        self.conv_in = _conv(n_mels, c, k, causal=causal, lookahead=cfg.lookahead)
        self.blocks = nn.ModuleList(_conv(c, c, k, stride=2 if i == 1 else 1, causal=causal)
                                    for i in range(cfg.content_blocks))
        self.conv_out = _conv(c, cfg.content_dim, 1)
        # model.content "vq": the instance-normalized code then goes through a codebook of units (a discrete code)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.content_dim) if cfg.content == "vq" else None
        w = cfg.norm_window if causal else 0  # in mel frames; layers at the halved rate use half as many
        self.norm_high, self.norm_low = _norm(w, cfg.norm), _norm(w // 2, cfg.norm)
        self.code_norm = cfg.code_norm
        self.norm_code = self.norm_low if cfg.code_norm else _norm(0, "none")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = _act(self.norm_high(self.conv_in(mel)))
        for i, block in enumerate(self.blocks):
            h = _act((self.norm_high if i == 0 else self.norm_low)(block(x)))
            x = (_halve(x, self.causal) if block.stride[0] == 2 else x) + h
        z = self.norm_code(self.conv_out(x))
        return self.quantizer(z) if self.quantizer is not None else z


class SpeakerEncoder(nn.Module):
    """(B, n_mels, T) -> speaker embedding (B, speaker_dim), pooled over time (mean and standard deviation)."""

    def __init__(self, cfg: ModelConfig, n_mels: int):
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.conv_in = _conv(n_mels, c, k)
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

    def __init__(self, channels: int, speaker_dim: int, window: int = 0, kind: str = "instance"):
        super().__init__()
        self.affine = nn.Linear(speaker_dim, 2 * channels)
        self.window, self.kind = window, kind
        self.norm = _norm(window, kind)

    def forward(self, x: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(spk).unsqueeze(2).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class Decoder(nn.Module):
    """Content code (B, content_dim, T'), speaker (B, speaker_dim) and, with `cfg.pitch`, the pitch features of
    `vc.pitch.features` (B, 2, frames) -> normalized mel (B, n_mels, frames).

    The pitch enters every block after its AdaIN, so that instance norm cannot remove the register it sets.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int):
        super().__init__()
        c, k, causal = cfg.channels, cfg.kernel_size, cfg.causal
        self.causal = causal
        self.conv_in = _conv(cfg.content_dim, c, k, causal=causal)
        self.low = cfg.decoder_blocks // 2  # blocks at the content rate, before upsampling
        self.convs = nn.ModuleList(_conv(c, c, k, causal=causal) for _ in range(cfg.decoder_blocks))
        w = cfg.norm_window if causal else 0
        kind = cfg.decoder_norm or cfg.norm
        self.norms = nn.ModuleList(AdaIN(c, cfg.speaker_dim, w // 2 if i < self.low else w, kind)
                                   for i in range(cfg.decoder_blocks))
        self.pitch = (nn.ModuleList(_conv(2, c, 3, causal=causal) for _ in range(cfg.decoder_blocks))
                      if cfg.pitch else None)
        self.conv_out = _conv(c, n_mels, k, causal=causal)

    def forward(self, content: torch.Tensor, spk: torch.Tensor, frames: int,
                pitch: torch.Tensor | None = None) -> torch.Tensor:
        if self.pitch is not None:
            if pitch is None:
                raise ValueError("this decoder needs pitch features")
            pitch_low = _halve(pitch.to(content.dtype), self.causal)[:, :, :content.shape[2]]
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
    """The inference network: the three modules plus the per-bin mel statistics of the training data; with
    `cfg.content_features == "whisper"`, also the frozen Whisper encoder (`features`, of dims `whisper`) and the
    per-channel statistics of its states on the training data (`content_mean`, `content_std`)."""

    def __init__(self, cfg: ModelConfig, n_mels: int, whisper: WhisperDims | None = None):
        super().__init__()
        self.cfg = cfg
        channels = n_mels
        self.features: WhisperEncoder | None = None
        if cfg.content_features == "whisper":
            if whisper is None:
                raise ValueError("a model with whisper content features needs the Whisper encoder's dims")
            self.features = WhisperEncoder(whisper).requires_grad_(False)
            channels = whisper.n_state
        self.content_encoder = ContentEncoder(cfg, channels)
        self.speaker_encoder = SpeakerEncoder(cfg, n_mels)
        self.decoder = Decoder(cfg, n_mels)
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        if self.features is not None:
            self.register_buffer("content_mean", torch.zeros(channels))
            self.register_buffer("content_std", torch.ones(channels))

    def standardize(self, states: torch.Tensor) -> torch.Tensor:
        """Whisper states (B, C, T) -> per-channel standardized with the training data's statistics."""
        return (states.float() - self.content_mean[:, None]) / self.content_std[:, None]

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel (B, n_mels, T) -> per-bin standardized mel, the model's input and output space."""
        return (mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, mel: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
        """The inverse of `normalize`; with `clamp`, normalized values above it (decoder glitches) are cut first."""
        if clamp is not None:
            mel = mel.clamp(max=clamp)
        return mel * self.mel_std[:, None] + self.mel_mean[:, None]

    def forward(self, mel: torch.Tensor, ref: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """Content input (B, C, T: the normalized mel, or `vc.content.content_input`), references (B, n_mels, T_ref)
        and pitch features (B, 2, T) -> normalized mel (B, n_mels, T)."""
        return self.decoder(self.content_encoder(mel), self.speaker_encoder(ref), mel.shape[2], pitch)
