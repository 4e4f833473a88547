"""Configuration dataclasses. The config travels inside every checkpoint; recipes (YAML) override its fields."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import VCError

PARTS = ("speaker", "adain", "pitch", "decoder", "content")  # what `AdaptConfig.parts` may name
VOCODERS = ("vocos", "griffin-lim")  # mel-to-waveform stages `load_vocoder` knows
LAYOUTS = ("folder", "vctk", "libritts", "librispeech")  # corpus layouts `vc prepare` reads
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au"}  # read by soundfile


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 800  # 50 ms window
    hop_length: int = 200  # 12.5 ms hop: 80 frames per second
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    trim_db: float = 30.0  # leading/trailing silence below peak - trim_db is cut from references
    target_db: float = -20.0  # loudness of active speech after normalization (dBFS, RMS)
    min_seconds: float = 0.5  # shorter clips are rejected


@dataclass
class ModelConfig:
    n_mels: int = 80
    channels: int = 256
    kernel_size: int = 5
    content_blocks: int = 4  # the second block halves the time rate
    content_dim: int = 16  # narrow bottleneck: room for phonetic content, not for timbre
    speaker_blocks: int = 4  # each halves the time rate before pooling
    speaker_dim: int = 128
    decoder_blocks: int = 6  # half at the content rate, half at the mel rate, each with AdaIN
    pitch: bool = True  # the decoder is conditioned on log-F0 moved to the target's register
    causal: bool = False  # streamable: content encoder and decoder see past frames only, but for `lookahead`
    lookahead: int = 2  # with `causal`: future mel frames the content encoder's first layer sees (12.5 ms each)
    norm_window: int = 0  # with `causal`: instance norm over the last this many mel frames (0: the whole clip)
    classifier_channels: int = 256
    classifier_dropout: float = 0.3
    n_speakers: int = 1  # training speakers; sized from the data by `vc train`


@dataclass
class VocoderConfig:
    """Vocos-style vocoder: ConvNeXt blocks at the mel frame rate predict STFT magnitude and phase; an inverse STFT
    (the project's n_fft, window and hop) makes the waveform."""
    dim: int = 384
    layers: int = 8
    intermediate: int = 1152
    kernel_size: int = 7
    causal: bool = False  # streamable: every layer sees past mel frames only


@dataclass
class TrainConfig:
    seed: int = 1234
    steps: int = 20000
    batch_size: int = 32
    segment_frames: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 5.0
    adv_weight: float = 0.05  # final weight of the adversarial (anti-speaker) term on the content code
    adv_start: int = 1000  # the classifier learns alone before the encoder is pushed against it
    adv_ramp: int = 5000  # steps over which the adversarial weight ramps from 0 to adv_weight
    speaker_ce_weight: float = 0.1  # auxiliary speaker classification on the speaker embedding
    freq_warp: float = 0.12  # content input is stretched along frequency by up to +-12% (timbre scrambling)
    bf16: bool = True  # bf16 autocast on CPUs with fast bf16 matrix units
    threads: int = 0  # torch threads; 0 keeps torch's default
    num_val_utterances: int = 40
    val_every: int = 1000
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    export_every: int = 0  # also export an inference snapshot at validations every this many steps (0: never)
    dev_data: str = ""  # validation split; empty: a `dev` folder beside the training data, if any


@dataclass
class AdaptConfig:
    """`vc adapt`: fine-tuning a trained converter on new speakers (see `vc.adapt`)."""
    parts: tuple[str, ...] = ("speaker", "adain")  # the speaker encoder and the decoder's AdaIN affine layers
    steps: int = 1500
    minutes: float | None = 10.0  # budget for the whole run, feature extraction included; the learning rate anneals
    lr: float = 5e-4  # to its floor by then or by `steps`, whichever comes first
    warmup_steps: int = 50
    batch_size: int = 16
    segment_frames: int = 128
    seed: int = 1234
    threads: int = 0  # torch threads; 0 keeps torch's default
    log_every: int = 25
    sample_every: int = 500  # TensorBoard audio of conversions between the new speakers
    checkpoint_minutes: float = 2.0


@dataclass
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return cls(
            audio=_build(AudioConfig, d.get("audio", {}), "audio"),
            model=_build(ModelConfig, d.get("model", {}), "model"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
        )


def _build(kind: type, values: dict[str, Any], section: str):
    if not isinstance(values, dict):
        raise VCError(f"config section '{section}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise VCError(f"unknown {section} field(s): {', '.join(unknown)}")
    return kind(**values)


def load_recipe(path: str | Path) -> Config:
    """A recipe is YAML with optional `audio`, `model` and `train` sections overriding the defaults."""
    path = Path(path)
    if not path.is_file():
        raise VCError(f"{path}: recipe not found")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VCError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise VCError(f"{path}: a recipe must be a mapping of sections")
    unknown = sorted(set(d) - {"audio", "model", "train"})
    if unknown:
        raise VCError(f"{path}: unknown section(s): {', '.join(unknown)}")
    try:
        cfg = Config.from_dict(d)
    except (VCError, TypeError) as e:
        raise VCError(f"{path}: {e}") from None
    cfg.model.n_mels = cfg.audio.n_mels
    return cfg
