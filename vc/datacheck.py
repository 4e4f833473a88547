"""The data checker of `vc prepare`: what is wrong with which clip, and how much speech each speaker has.

A clip is dropped when it is not audio, silent (DC and rumble count as silence), or too short; it is kept with a
warning when it is clipped, truncated, band-limited (telephone audio), has a sample rate below the model's, or has
no transcript. A speaker with less speech than `min_speaker_seconds` stops the
preparation with advice, since neither training nor adaptation can learn a voice from a few seconds.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from .audio import NARROW_DB, NARROW_HZ, SILENCE_DBFS, SPEECH_LOW_HZ, declared_frames, speech_levels
from .config import AudioConfig
from .errors import reason

DROP = ("not audio", "silent", "too short")  # findings that keep a clip out of utterances.tsv
WARN = ("clipped", "low sample rate", "band-limited", "truncated", "long", "no transcript")
CLIPPED_FRACTION = 1e-3  # more than 0.1 % of samples at full scale: audibly distorted
FULL_SCALE = 0.999
LONG_SECONDS = 60.0  # longer clips work, but training takes its speaker reference from *another* clip of the speaker


@dataclass
class Finding:
    path: str
    kind: str  # one of DROP or WARN
    detail: str

    def line(self) -> str:
        return f"{self.path}: {self.kind} ({self.detail})" if self.detail else f"{self.path}: {self.kind}"


@dataclass
class ClipInfo:
    seconds: float  # of the whole file
    speech_seconds: float  # after trimming leading and trailing silence, as training does
    sample_rate: int
    channels: int


def inspect(path: str | os.PathLike, cfg: AudioConfig | None = None) -> tuple[ClipInfo | None, list[Finding]]:
    """Read one file and say what is wrong with it; the info is None when it cannot be used at all."""
    cfg = cfg or AudioConfig()
    name = str(path)
    try:
        wav, sr = sf.read(name, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for non-audio, truncated and empty files
        detail = "empty file" if Path(name).is_file() and Path(name).stat().st_size == 0 else reason(e)[:120]
        return None, [Finding(name, "not audio", detail)]
    channels, mono = wav.shape[1], wav.mean(axis=1)
    info = ClipInfo(len(mono) / sr if sr else 0.0, 0.0, sr, channels)
    findings = []
    if mono.size == 0 or not np.all(np.isfinite(mono)):
        return None, [Finding(name, "not audio", "no samples" if mono.size == 0 else "NaN or infinite samples")]
    mono = mono - mono.mean(dtype=np.float64)  # as load_wav does: a DC offset is not sound
    hop = max(1, sr // 20)
    loudest, narrow = speech_levels(mono, sr)  # load_wav's rule, so that no kept clip fails to load in training
    if loudest < SILENCE_DBFS:
        return None, [Finding(name, "silent", f"loudest 100 ms at {loudest:.0f} dBFS above {SPEECH_LOW_HZ:.0f} Hz")]
    trimmed, _ = librosa.effects.trim(mono, top_db=cfg.trim_db, frame_length=2 * hop, hop_length=hop)
    info.speech_seconds = len(trimmed) / sr
    if info.speech_seconds < cfg.min_seconds:
        return None, [Finding(name, "too short", f"{info.speech_seconds:.2f} s of sound, need {cfg.min_seconds} s")]
    clipped = float((np.abs(wav) >= FULL_SCALE).mean())
    if clipped > CLIPPED_FRACTION:
        findings.append(Finding(name, "clipped", f"{clipped:.1%} of samples at full scale"))
    if info.seconds > LONG_SECONDS:
        findings.append(Finding(name, "long", f"{info.seconds:.0f} s; clips of 3 to 15 s train best: split it"))
    declared = declared_frames(name)
    if declared and declared > len(mono):
        findings.append(Finding(name, "truncated", f"{len(mono) / sr:.2f} s of the {declared / sr:.2f} s its header "
                                "declares"))
    if narrow < NARROW_DB and sr >= cfg.sample_rate:
        findings.append(Finding(name, "band-limited", f"no sound above {NARROW_HZ / 1000:.0f} kHz (telephone audio?)"))
    if sr < cfg.sample_rate:
        findings.append(Finding(name, "low sample rate",
                                f"{sr} Hz, upsampled to {cfg.sample_rate} Hz: nothing above {sr // 2} Hz"))
    return info, findings


def _inspect(args: tuple[str, AudioConfig]) -> tuple[ClipInfo | None, list[Finding]]:
    return inspect(*args)


@dataclass
class Report:
    """What `check` found: per-clip info (None for dropped clips), findings, and the speakers' totals."""
    paths: list[str]
    speakers: list[str]
    infos: list[ClipInfo | None]
    findings: list[Finding] = field(default_factory=list)
    drop: tuple[str, ...] = DROP  # the kinds of finding that keep a clip out
    base: str = ""  # paths are shown relative to this folder in `text`

    def kept(self) -> list[int]:
        dropped = {f.path for f in self.findings if f.kind in self.drop}
        return [i for i, p in enumerate(self.paths) if self.infos[i] is not None and p not in dropped]

    def per_speaker(self) -> dict[str, dict[str, float]]:
        """{speaker: {clips, kept, seconds}} with the speech seconds of the kept clips."""
        out: dict[str, dict[str, float]] = {}
        for s in self.speakers:
            out.setdefault(s, {"clips": 0, "kept": 0, "seconds": 0.0})["clips"] += 1
        for i in self.kept():
            row = out[self.speakers[i]]
            row["kept"] += 1
            row["seconds"] += self.infos[i].speech_seconds
        return out

    def short_speakers(self, min_seconds: float) -> dict[str, dict[str, float]]:
        return {s: r for s, r in self.per_speaker().items() if r["seconds"] < min_seconds}

    def sample_rates(self) -> dict[int, int]:
        rates: dict[int, int] = {}
        for info in self.infos:
            if info is not None:
                rates[info.sample_rate] = rates.get(info.sample_rate, 0) + 1
        return dict(sorted(rates.items()))

    def text(self, cfg: AudioConfig | None = None, max_lines: int = 10) -> str:
        """The human report: counts per finding (with the first files), rates, and minutes per speaker."""
        cfg = cfg or AudioConfig()
        kept = self.kept()
        lines = [f"{len(self.paths)} clips of {len(set(self.speakers))} speakers; {len(kept)} usable, "
                 f"{sum(self.infos[i].speech_seconds for i in kept) / 60:.1f} min of speech"]
        for kind in DROP + WARN:
            hits = [f for f in self.findings if f.kind == kind]
            if hits:
                verdict = "dropped" if kind in self.drop else "kept"
                lines.append(f"{kind}: {len(hits)} clip(s), {verdict}")
                lines += [f"  {f.line().replace(self.base + os.sep, '') if self.base else f.line()}"
                          for f in hits[:max_lines]]
                if len(hits) > max_lines:
                    lines.append(f"  ... and {len(hits) - max_lines} more (report.json lists all)")
        rates = ", ".join(f"{sr} Hz: {n}" for sr, n in self.sample_rates().items())
        lines.append(f"sample rates: {rates or 'none'} (all read at {cfg.sample_rate} Hz)")
        lines.append(f"{'speaker':<20} {'clips':>6} {'usable':>6} {'minutes':>8}")
        for s, r in sorted(self.per_speaker().items()):
            lines.append(f"{s:<20} {r['clips']:>6} {r['kept']:>6} {r['seconds'] / 60:>8.2f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"findings": [asdict(f) for f in self.findings], "speakers": self.per_speaker(),
                           "sample_rates": self.sample_rates()}, indent=1)


def check(paths: list[str], speakers: list[str], cfg: AudioConfig | None = None, jobs: int = 1) -> Report:
    """Inspect every clip (in `jobs` processes) and collect the findings."""
    cfg = cfg or AudioConfig()
    work = [(p, cfg) for p in paths]
    if jobs > 1 and len(paths) > 50:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_inspect, work, chunksize=32))
    else:
        results = [_inspect(w) for w in work]
    report = Report(list(paths), list(speakers), [r[0] for r in results])
    for _, findings in results:
        report.findings += findings
    return report


def advice(report: Report, min_speaker_seconds: float, where: str) -> str | None:
    """The message that stops preparation, or None when the data can be used."""
    kept = report.kept()
    if not kept:
        counts = ", ".join(f"{sum(f.kind == k for f in report.findings)} {k}" for k in DROP
                           if any(f.kind == k for f in report.findings))
        return f"{where}: no usable audio ({len(report.paths)} file(s): {counts}); see {where}/report.txt"
    short = report.short_speakers(min_speaker_seconds)
    if not short:
        return None
    names = ", ".join(f"{s} ({r['seconds']:.0f} s in {r['kept']} usable clip(s))" for s, r in sorted(short.items()))
    return (f"too little speech for {len(short)} speaker(s): {names}; each needs at least {min_speaker_seconds:.0f} s "
            "(1 to 3 minutes for adaptation, 10 or more per speaker to train from scratch). Record more (quiet room, "
            "no music, 3 to 15 s per clip), remove those speakers, or lower --min-speaker-seconds; "
            f"see {where}/report.txt")

