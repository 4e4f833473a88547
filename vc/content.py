"""What the content encoder reads (`ModelConfig.content_features`): the normalized mel, or the states of a frozen
Whisper encoder (`vc.whisper`) at the mel's frame rate, standardized per channel with the training data's statistics.

Whisper's states come at 50 Hz (20 ms); the converter's mels at sample_rate / hop_length (80 Hz by default): the
states are interpolated linearly onto the mel frames (`vc.whisper.resample_states`), so that the content encoder,
its stride-2 halving, the pitch input and the decoder see the same frames as with mels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import AudioConfig
from .errors import VCError
from .model import VoiceConverterNet
from .whisper import SAMPLE_RATE, WhisperEncoder, encode, resample_states


def whisper_states(encoder: WhisperEncoder, wav: torch.Tensor | np.ndarray, layers: int, audio: AudioConfig,
                   frames: int) -> torch.Tensor:
    """(T,) waveform at `audio.sample_rate` -> raw Whisper states (n_state, frames) float32 on the mel's frames.

    `layers`: the encoder blocks run (0: all, with the final norm). The clip's frames only (`crop=True`): the
    same computation in training and conversion, and several times faster than padding every clip to 30 s."""
    if audio.sample_rate != SAMPLE_RATE:
        raise VCError(f"whisper content features need {SAMPLE_RATE} Hz audio, not {audio.sample_rate}")
    states = encode(encoder, wav, crop=True, n_layers=layers or None)
    return resample_states(states, audio.sample_rate / audio.hop_length, frames).T.contiguous()


def mirror_edges(x: torch.Tensor, edge_pad: int) -> tuple[torch.Tensor, int]:
    """A content input (B, C, frames) mirrored `pad` frames out at both ends, and `pad`: at most `edge_pad`, even (so
    that the content encoder's halved rate stays aligned) and shorter than the clip. The code of the clip's own frames
    is then `code[:, :, pad // 2: pad // 2 + ceil(frames / 2)]`."""
    pad = min(edge_pad, x.shape[2] - 1) // 2 * 2
    return (F.pad(x, (pad, pad), mode="reflect") if pad > 0 else x), pad


@torch.inference_mode()
def content_input(net: VoiceConverterNet, wav: torch.Tensor | np.ndarray, mel: torch.Tensor,
                  audio: AudioConfig) -> torch.Tensor:
    """What `net.content_encoder` reads: waveforms (B, T) or (T,) and their normalized mels (B, n_mels, frames) ->
    (B, C, frames): the mel itself for "mel" models; for "whisper" the standardized states of each waveform."""
    if net.features is None:
        return mel
    wav = torch.as_tensor(wav, dtype=torch.float32)
    wav = wav[None] if wav.dim() == 1 else wav
    states = torch.stack([whisper_states(net.features, w.cpu(), net.cfg.whisper_layers, audio, mel.shape[2])
                          for w in wav])
    return net.standardize(states.to(mel.device))
