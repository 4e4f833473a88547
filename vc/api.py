"""The public API: `load_model()` and the `VoiceConverter` it returns.

    model = vc.load_model()
    wav = model.convert("source.flac", "target.wav")   # np.float32 (T,) at model.sample_rate
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .audio import load_wav, log_mel, n_frames, normalize_loudness, prepare
from .checkpoint import build_model, load_checkpoint
from .config import Config
from .errors import VCError
from .model import VoiceConverterNet
from .vocoder import load_vocoder

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default.pt"

# A clip: a path, a float array already at the model's rate, or (array, sample_rate).
Audio = Union[str, os.PathLike, np.ndarray, tuple]


class VoiceConverter:
    """A trained model with its config and vocoder. Stage methods can be called one by one:

    `embed` (target clips -> speaker vector), `encode` (source -> content code), `decode` (content + speaker ->
    log-mel), `vocode` (log-mel -> waveform); `convert` chains them.
    """

    def __init__(self, net: VoiceConverterNet, cfg: Config, vocoder: str = "griffin-lim", device: str = "cpu"):
        self.net = net.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.vocoder_name = vocoder
        self.vocoder = load_vocoder(vocoder, cfg.audio)

    @property
    def sample_rate(self) -> int:
        return self.cfg.audio.sample_rate

    def load(self, audio: Audio, *, trim: bool = True) -> np.ndarray:
        """Any clip -> mono float32 (T,) at the model's rate, loudness-normalized (and trimmed, for references)."""
        if isinstance(audio, (str, os.PathLike)):
            return load_wav(audio, self.cfg.audio, trim=trim)
        if isinstance(audio, tuple):
            wav, sr = audio
            return prepare(wav, sr, self.cfg.audio, trim=trim)
        if isinstance(audio, np.ndarray):
            return prepare(audio, self.sample_rate, self.cfg.audio, trim=trim)
        raise VCError(f"cannot read audio from a {type(audio).__name__}")

    def mel(self, wav: np.ndarray) -> torch.Tensor:
        """(T,) waveform -> normalized log-mel (1, n_mels, frames) on the model's device."""
        return self.net.normalize(log_mel(wav, self.cfg.audio).to(self.device)[None])

    @torch.inference_mode()
    def embed(self, targets: Audio | Sequence[Audio]) -> torch.Tensor:
        """One or several clips of the target speaker -> speaker vector (speaker_dim,), the mean over the clips."""
        if isinstance(targets, (str, os.PathLike, np.ndarray, tuple)):
            targets = [targets]
        if len(targets) == 0:
            raise VCError("no target clip given")
        embs = [self.net.speaker_encoder(self.mel(self.load(t, trim=True)))[0] for t in targets]
        return torch.stack(embs).mean(dim=0)

    @torch.inference_mode()
    def encode(self, wav: np.ndarray) -> torch.Tensor:
        """(T,) waveform -> content code (content_dim, ceil(frames / 2))."""
        return self.net.content_encoder(self.mel(wav))[0]

    @torch.inference_mode()
    def decode(self, content: torch.Tensor, speaker: torch.Tensor, frames: int) -> torch.Tensor:
        """Content code and speaker vector -> log-mel (n_mels, frames), in the space `log_mel` returns."""
        mel = self.net.decoder(content[None], speaker[None].to(self.device), frames)
        return self.net.denormalize(mel)[0]

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, length: int | None = None) -> np.ndarray:
        """Log-mel (n_mels, frames) -> waveform (T,) float32."""
        return self.vocoder(mel.float().cpu(), length).numpy().astype(np.float32)

    def convert(self, source: Audio, target: Audio | Sequence[Audio] | torch.Tensor) -> np.ndarray:
        """Say what `source` says in the voice of `target` (clip(s), or a vector from `embed`).

        Returns float32 (T,) at `sample_rate`, as long as the source (silences kept) and loudness-normalized.
        """
        speaker = target if isinstance(target, torch.Tensor) else self.embed(target)
        wav = self.load(source, trim=False)
        frames = n_frames(len(wav), self.cfg.audio)
        out = self.vocode(self.decode(self.encode(wav), speaker, frames), len(wav))
        return normalize_loudness(out, self.sample_rate, self.cfg.audio.target_db)


def load_model(checkpoint: str | os.PathLike | None = None, *, vocoder: str = "griffin-lim",
               device: str = "cpu") -> VoiceConverter:
    """Load a checkpoint (default: the shipped `checkpoints/default.pt`) as a `VoiceConverter`."""
    path = Path(checkpoint) if checkpoint is not None else Path(os.environ.get("VC_CHECKPOINT", DEFAULT_CHECKPOINT))
    net, cfg = build_model(load_checkpoint(path), path)
    return VoiceConverter(net, cfg, vocoder=vocoder, device=device)
