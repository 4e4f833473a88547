"""`vc evaluate`: score conversions with offline judges, row by row, and summarize them.

    vc evaluate LIST.tsv --json scores.json [--asr base|tiny.en] [--no-asr] [--no-dnsmos] [--no-mcd] [--no-speaker]

A row is one conversion: the converted clip, its source, the target reference it was made with, and optionally the
source's text, a parallel recording of the same sentence by the target speaker, another clip of the target speaker,
and the seconds the conversion took. Per row (the judges live in vc/judges.py):

- speaker (resemblyzer cosine): cos_out_ref, cos_out_src, cos_src_ref (no conversion: the floor), closer_to_target
  (cos_out_ref > cos_out_src); with `other`: cos_other_ref (a genuine clip: the ceiling) and
  gap_closed = (cos_out_ref - cos_src_ref) / (cos_other_ref - cos_src_ref), 0 for the unconverted source, 1 at the
  ceiling. The summary gives its mean over rows and, steadier, the same ratio of the means (gap_closed_pooled).
- asr (Whisper base by default, which shares no weights with the converter's Whisper tiny.en content features;
  `asr="tiny.en"` for the earlier judge): cer, wer of the output's transcript against `text`, else against the source's transcript;
  src_cer, src_wer: the source's own, against `text`. Text is lowercased and stripped of punctuation first. The
  summary's cer is the mean over rows, where a two-word clip weighs as much as a paragraph; cer_pooled (and
  src_cer_pooled) is the corpus-level rate: all rows' character errors over all their reference characters.
- dnsmos: ovrl, sig, bak of the output; src_ovrl, src_sig, src_bak of the source.
- mcd: mel-cepstral distortion in dB to `parallel`, after DTW (c1..c24, silence trimmed at both ends only).
- pitch (WORLD Harvest): f0_out, f0_src, f0_ref, geometric means over voiced frames in Hz; f0_dist_st, the
  distance between output and reference log-F0 means in semitones; and where source and reference lie more than
  2 semitones apart (cross-gender-like), pitch_gap_closed = (lf0_out - lf0_src) / (lf0_ref - lf0_src).
- rtf: seconds / output duration, when `seconds` is given (summary: total seconds / total duration).
"""
from __future__ import annotations

import csv
import functools
import math
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from .audio import load_wav
from .config import AudioConfig
from .errors import VCError
from .judges import (
    ASR_MODELS,
    JUDGES,
    SAMPLE_RATE,
    SEMITONES_PER_LOG,
    AsrJudge,
    DnsmosJudge,
    SpeakerJudge,
    error_rates,
    mcd,
    mean_log_f0,
    mel_cepstrum,
    require,
    world_f0,
)

PITCH_GAP_SEMITONES = 2.0  # pitch_gap_closed only where source and reference differ by more than this
SUMMARY_KEYS = ("cos_out_ref", "cos_out_src", "cos_src_ref", "closer_to_target", "cos_other_ref", "gap_closed",
                "cer", "wer", "src_cer", "src_wer", "ovrl", "sig", "bak", "src_ovrl", "src_sig", "src_bak", "mcd",
                "f0_out", "f0_src", "f0_ref", "f0_dist_st", "pitch_gap_closed")


@dataclass
class Row:
    """One conversion to score. Paths are audio files; text, parallel, other and seconds are optional."""
    converted: Path
    source: Path
    target: Path
    text: str | None = None
    parallel: Path | None = None  # the target speaker saying the source's sentence: for MCD
    other: Path | None = None  # another clip of the target speaker: the ceiling of speaker similarity
    seconds: float | None = None  # time the conversion took: for the real-time factor


COLUMNS = tuple(f.name for f in fields(Row))
REQUIRED = ("converted", "source", "target")


def read_rows(path: str | os.PathLike) -> list[Row]:
    """Rows of a tab-separated file with a header naming COLUMNS; relative paths are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise VCError(f"{path}: file not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise VCError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
        rows = []
        for line, record in enumerate(reader, start=2):
            cells = {k: (record.get(k) or "").strip() or None for k in COLUMNS}
            for k in ("converted", "source", "target", "parallel", "other"):
                if cells[k]:
                    cells[k] = path.parent / cells[k]
            if cells["seconds"]:
                try:
                    cells["seconds"] = float(cells["seconds"])
                except ValueError:
                    raise VCError(f"{path}: line {line}: seconds is not a number: {cells['seconds']!r}") from None
            if not all(cells[k] for k in REQUIRED):
                raise VCError(f"{path}: line {line}: converted, source and target are all needed")
            rows.append(Row(**cells))
    return rows


class Scorer:
    """Judges loaded once, on first use, and results cached per file: a source or reference recurs across rows and
    across the systems compared on the same pairs."""

    def __init__(self, judges: Iterable[str] = JUDGES, threads: int | None = None, asr: str = "base"):
        self.judges, self.asr = tuple(judges), asr
        unknown = set(self.judges) - set(JUDGES)
        if unknown:
            raise VCError(f"unknown judge(s): {', '.join(sorted(unknown))} (choose from: {', '.join(JUDGES)})")
        if asr not in ASR_MODELS:
            raise VCError(f"unknown ASR judge {asr!r} (choose from: {', '.join(ASR_MODELS)})")
        require(self.judges, asr)
        self.threads = threads or torch.get_num_threads()
        self._models: dict[str, object] = {}
        self._cache: dict[tuple[str, str], object] = {}
        self.load = functools.lru_cache(maxsize=16)(self._load)

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        """16 kHz mono, leading and trailing silence trimmed, level untouched; VCError naming the file if unusable."""
        return load_wav(path, AudioConfig(sample_rate=SAMPLE_RATE), trim=True, normalize=False)

    def model(self, judge: str):
        """The judge's model, loaded on first use."""
        if judge not in self._models:
            if judge == "speaker":
                self._models[judge] = SpeakerJudge()
            elif judge == "asr":
                self._models[judge] = AsrJudge(self.threads, self.asr)
            else:
                self._models[judge] = DnsmosJudge(self.threads)
        return self._models[judge]

    def measure(self, name: str, path: Path, fn):
        """fn(audio of path), cached under (name, path)."""
        key = (name, str(path))
        if key not in self._cache:
            self._cache[key] = fn(self.load(Path(path)))
        return self._cache[key]

    def score(self, row: Row) -> dict:
        """All measures of one row (see the module docstring); VCError naming the file when one is unusable."""
        for path in (row.converted, row.source, row.target, row.parallel, row.other):
            if path is not None:
                self.load(Path(path))  # fail on a bad file before any judge runs
        out: dict = {"converted": str(row.converted), "duration_s": len(self.load(Path(row.converted))) / SAMPLE_RATE}
        conv, src, ref = row.converted, row.source, row.target
        if "speaker" in self.judges:
            m = self.model("speaker")
            emb = functools.partial(self.measure, "embedding", fn=m.embed)
            out["cos_out_ref"] = m.similarity(emb(conv), emb(ref))
            out["cos_out_src"] = m.similarity(emb(conv), emb(src))
            out["cos_src_ref"] = m.similarity(emb(src), emb(ref))
            out["closer_to_target"] = out["cos_out_ref"] > out["cos_out_src"]
            if row.other is not None:
                out["cos_other_ref"] = m.similarity(emb(row.other), emb(ref))
                span = out["cos_other_ref"] - out["cos_src_ref"]
                if span > 0:  # else the judge cannot tell the target from the source here
                    out["gap_closed"] = (out["cos_out_ref"] - out["cos_src_ref"]) / span
        if "asr" in self.judges:
            transcribe = functools.partial(self.measure, "transcript", fn=self.model("asr").transcribe)
            out["transcript"], out["src_transcript"] = transcribe(conv), transcribe(src)
            out.update(error_rates(row.text or out["src_transcript"], out["transcript"]))
            if row.text:
                out["text"] = row.text
                out.update({f"src_{k}": v for k, v in error_rates(row.text, out["src_transcript"]).items()
                            if k != "ref_chars"})
        if "dnsmos" in self.judges:
            mos = functools.partial(self.measure, "dnsmos", fn=self.model("dnsmos").score)
            out.update(mos(conv))
            out.update({f"src_{k}": v for k, v in mos(src).items()})
        f0 = functools.partial(self.measure, "f0", fn=world_f0)
        if "mcd" in self.judges and row.parallel is not None:
            mcep = {p: self.measure("mcep", p, lambda wav, p=p: mel_cepstrum(wav, f0(p))) for p in (conv, row.parallel)}
            out["mcd"] = mcd(mcep[conv], mcep[row.parallel])
        if "pitch" in self.judges:
            lf0 = {k: mean_log_f0(f0(p)) for k, p in (("out", conv), ("src", src), ("ref", ref))}
            out.update({f"f0_{k}": math.exp(v) for k, v in lf0.items() if v is not None})
            if lf0["out"] is not None and lf0["ref"] is not None:
                out["f0_dist_st"] = abs(lf0["out"] - lf0["ref"]) * SEMITONES_PER_LOG
            if None not in lf0.values():
                gap = lf0["ref"] - lf0["src"]
                if abs(gap) * SEMITONES_PER_LOG > PITCH_GAP_SEMITONES:
                    out["pitch_gap_closed"] = (lf0["out"] - lf0["src"]) / gap
        if row.seconds is not None:
            out["seconds"] = row.seconds
            out["rtf"] = row.seconds / out["duration_s"]
        return out


def summarize(results: list[dict]) -> dict:
    """Means of the per-row measures over the rows that have them (shares for closer_to_target), with counts."""
    ok = [r for r in results if "error" not in r]
    summary: dict = {"rows": len(results), "failed": len(results) - len(ok)}

    def values(key: str, rows: list[dict] = ok) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    for key in SUMMARY_KEYS:
        if values(key):
            summary[key] = float(np.mean(values(key)))
        if key == "gap_closed" and values(key):
            gapped = [r for r in ok if "gap_closed" in r]
            mean = {k: np.mean(values(k, gapped)) for k in ("cos_out_ref", "cos_src_ref", "cos_other_ref")}
            summary["gap_closed_pooled"] = float((mean["cos_out_ref"] - mean["cos_src_ref"])
                                                 / (mean["cos_other_ref"] - mean["cos_src_ref"]))
            summary["gap_closed_rows"] = len(gapped)
        if key in ("mcd", "pitch_gap_closed") and values(key):
            summary[f"{key}_rows"] = len(values(key))
    for key in ("cer", "src_cer"):
        scored = [r for r in ok if r.get(key) is not None and r.get("ref_chars")]
        if scored:
            summary[f"{key}_pooled"] = (sum(r[key] * r["ref_chars"] for r in scored)
                                        / sum(r["ref_chars"] for r in scored))
    timed = [r for r in ok if "seconds" in r]
    if timed:
        summary["rtf"] = sum(r["seconds"] for r in timed) / sum(r["duration_s"] for r in timed)
    return summary


def evaluate(rows: Iterable[Row | Mapping], judges: Iterable[str] = JUDGES, *, scorer: Scorer | None = None,
             verbose: bool = False, asr: str = "base") -> dict:
    """Score every row: {"judges", "summary", "rows"}. A row whose file is missing or unusable is reported with
    "error" (and a one-line message on stderr) while the others are scored. Pass `scorer` to reuse loaded judges and
    cached results across calls (its judges and ASR model then apply)."""
    scorer = scorer or Scorer(judges, asr=asr)
    rows = [r if isinstance(r, Row) else Row(**r) for r in rows]
    results = []
    for i, row in enumerate(rows, start=1):
        try:
            result = scorer.score(row)
        except VCError as e:
            print(f"error: row {i}: {e}", file=sys.stderr)
            result = {"converted": str(row.converted), "error": str(e)}
        results.append(result)
        if verbose and "error" not in result:
            brief = "  ".join(f"{k} {result[k]:.3f}" for k in ("cos_out_ref", "cer", "ovrl", "mcd", "f0_dist_st")
                              if k in result)
            print(f"{i}/{len(rows)} {Path(row.converted).name}  {brief}", flush=True)
    return {"judges": list(scorer.judges), "asr": scorer.asr, "summary": summarize(results), "rows": results}


def format_table(columns: Mapping[str, Mapping]) -> str:
    """A markdown table of summaries: one column per name in `columns`, one line per measure."""
    keys = list(dict.fromkeys(k for summary in columns.values() for k in summary))

    def cell(v) -> str:
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| measure | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {k} | " + " | ".join(cell(s.get(k)) for s in columns.values()) + " |" for k in keys]
    return "\n".join(lines)


def print_table(summary: Mapping, file=None) -> None:
    """Print one summary as a markdown table."""
    print(format_table({"value": summary}), file=file or sys.stdout)
