"""Where a student model loses the voice (`train.code_teacher`, issue 15): its decoder fed its own content code, then
its teacher's code of the same source, judged by the speaker gap closed (G) on the fixed dev pairs.

    python benchmarks/code_swap.py runs/s10tF-4000v.pt --teacher checkpoints/default.pt

Pairs: the rows of benchmarks/dev_pairs.tsv whose target speaker has another clip (24 of 40), converted offline.
G pooled, as `vc evaluate` computes it: (mean cos(out, ref) - mean cos(src, ref)) / (mean cos(other, ref) -
mean cos(src, ref)), resemblyzer d-vectors. Printed for the student with its own code, the student's decoder with
the teacher's code (resampled onto the student's content frames; the mirrored edges, cut after decoding, keep the
student's), and the teacher's own conversion. If the teacher's code does not lift the student's G to near the
teacher's, the voice is lost in the student's decoder, speaker encoder or vocoder, not in its code.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

import vc
from vc.api import Content
from vc.audio import load_wav
from vc.judges import SpeakerJudge
from vc.whisper import resample_states

ROOT = Path(__file__).resolve().parents[1]


def content_rate(model) -> float:
    a = model.cfg.audio
    return a.sample_rate / a.hop_length / 2


def teacher_content(student, teacher, wav: np.ndarray) -> Content:
    """The student's `Content` of `wav` with the teacher's code in place of its own between the mirrored edges."""
    own, theirs = student.encode(wav), teacher.encode(wav)
    n = math.ceil(own.frames / 2)
    code = theirs.code[:, theirs.pad // 2: theirs.pad // 2 + math.ceil(theirs.frames / 2)]
    code = resample_states(code.T, content_rate(student), n, source_rate=content_rate(teacher)).T
    swapped = own.code.clone()
    swapped[:, own.pad // 2: own.pad // 2 + n] = code
    return Content(swapped, own.frames, own.pad)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student")
    p.add_argument("--teacher", default=str(ROOT / "checkpoints" / "default.pt"))
    p.add_argument("--pairs", default=str(ROOT / "benchmarks" / "dev_pairs.tsv"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    args = p.parse_args()
    data = Path(args.data)
    with open(args.pairs, newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["other"]]
    student, teacher, judge = vc.load_model(args.student), vc.load_model(args.teacher), SpeakerJudge()
    cos: dict[str, list[float]] = {k: [] for k in ("student", "student + teacher's code", "teacher", "src", "other")}
    for r in rows:
        wav = student.load(data / r["source"], trim=False)
        ref = judge.embed(load_wav(data / r["target"]))
        voice = student.voice(data / r["target"])
        p_in = student.source_pitch(wav, voice)
        outs = {"student": student.encode(wav), "student + teacher's code": teacher_content(student, teacher, wav)}
        for name, content in outs.items():
            out = student.finish(student.vocode(student.decode(content, voice, p_in), len(wav), p_in))
            cos[name].append(judge.similarity(judge.embed(out), ref))
        cos["teacher"].append(judge.similarity(judge.embed(teacher.convert(data / r["source"], data / r["target"])),
                                               ref))
        cos["src"].append(judge.similarity(judge.embed(wav), ref))
        cos["other"].append(judge.similarity(judge.embed(load_wav(data / r["other"])), ref))
    mean = {k: float(np.mean(v)) for k, v in cos.items()}
    print(f"{len(rows)} dev pairs; G pooled (resemblyzer)")
    for name in ("student", "student + teacher's code", "teacher"):
        print(f"{name}: {(mean[name] - mean['src']) / (mean['other'] - mean['src']):.3f}")


if __name__ == "__main__":
    main()
