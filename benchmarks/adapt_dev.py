"""Adaptation to new speakers, measured: speaker similarity and intelligibility of conversions to dev speakers before
and after `vc adapt`.

    python benchmarks/adapt_dev.py --speakers 19,32,332,460 --adapt-seconds 120 --minutes 10 --out runs/adapt-dev
    python benchmarks/adapt_dev.py --checkpoint runs/whisper/model.pt --out runs/adapt-dev-whisper  # another model

Each target speaker's clips (sorted by path) are split: the first ones, up to --adapt-seconds of audio, adapt the
model; the rest are held out. Sources are clips of other dev speakers (seeded). Every conversion takes one held-out
clip of the target as its reference; the judge (resemblyzer) compares the output with the mean embedding of the
target's *other* held-out clips, so that neither the adaptation clips nor the conversion reference is the yardstick.
The same pairs are converted by the original checkpoint and by the adapted one. Control pairs convert to dev speakers
that were not adapted to, to see what adaptation costs the others. Also the teacher-forced reconstruction L1 of
held-out target clips (reference: another held-out clip).

Intelligibility, so that adaptation is seen not to cost it: the character error rate of every output's transcript by
an ASR judge (`--asr`, default Whisper base, which shares no weights with a converter whose content features are
Whisper tiny.en's) against the source's text where utterances.tsv has one (its `text` column), else against the
judge's transcript of the source; and the source CER, the judge's own error on the sources that have a text (none for
the default speakers' sources, whose clips have no transcript). Prints a table and writes OUT/results.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import vc
from vc.audio import load_wav, save_wav
from vc.content import content_input
from vc.judges import ASR_MODELS, AsrJudge, SpeakerJudge, error_rates
from vc.training.adapt import AdaptConfig, adapt

ROOT = Path(__file__).resolve().parents[1]


def split_speakers(rows: list[dict], speakers: list[str], seconds: float) -> tuple[dict, dict]:
    """{speaker: adaptation rows}, {speaker: held-out rows}: the first clips by path up to `seconds`, the rest."""
    fit, held = {}, {}
    for s in speakers:
        clips = sorted((r for r in rows if r["speaker"] == s), key=lambda r: r["path"])
        total, i = 0.0, 0
        while i < len(clips) and total < seconds:
            total += float(clips[i]["dur_s"])
            i += 1
        fit[s], held[s] = clips[:i], clips[i:]
        if len(held[s]) < 3:
            raise SystemExit(f"speaker {s}: only {len(held[s])} clips left to hold out; lower --adapt-seconds")
    return fit, held


def make_pairs(rows: list[dict], held: dict, exclude: set[str], per_target: int, seed: int) -> list[dict]:
    """per_target (source, reference, judge clips) per target speaker; sources are speakers outside `exclude`."""
    rng = np.random.default_rng(seed)
    sources = sorted((r for r in rows if r["speaker"] not in exclude and float(r["dur_s"]) >= 3),
                     key=lambda r: r["path"])
    pairs = []
    for s, clips in held.items():
        picks = rng.choice(len(sources), size=per_target, replace=False)
        for k, i in enumerate(picks):
            ref = clips[k % len(clips)]
            pairs.append({"target_speaker": s, "source": sources[i]["path"], "source_speaker": sources[i]["speaker"],
                          "reference": ref["path"], "judge": [c["path"] for c in clips if c is not ref]})
    return pairs


def source_texts(asr: AsrJudge, sources: list[str], text: dict[str, str]) -> tuple[dict[str, str], dict]:
    """{source: what its conversions are scored against}: its text where it has one, else the judge's transcript of
    it; and the judge's own CER and WER on the sources with a text (None when none has)."""
    refs, cer, wer = {}, [], []
    for src in sources:
        heard = asr.transcribe(load_wav(src))
        refs[src] = text.get(src) or heard
        rates = error_rates(text.get(src, ""), heard)
        if rates:
            cer.append(rates["cer"])
            wer.append(rates["wer"])
    return refs, {"source_cer": float(np.mean(cer)) if cer else None,
                  "source_wer": float(np.mean(wer)) if wer else None, "sources_with_text": len(cer),
                  "sources": len(sources)}


def score(model: vc.VoiceConverter, pairs: list[dict], judge: SpeakerJudge, embeddings: dict, out: Path,
          asr: AsrJudge | None = None, refs: dict[str, str] | None = None) -> dict:
    """Convert every pair; cosine of the output to the target (mean of judge clips) and to the source; with `asr`,
    the CER and WER of the output's transcript against `refs[source]`."""
    to_target, to_source, closer, cer, wer = [], [], [], [], []
    for i, p in enumerate(pairs):
        wav = model.convert(p["source"], p["reference"])
        save_wav(out / f"{i:02d}_{p['source_speaker']}_to_{p['target_speaker']}.wav", wav, model.sample_rate)
        e = judge.embed(wav)
        tgt = np.mean([embeddings[c] for c in p["judge"]], axis=0)
        to_target.append(judge.similarity(e, tgt))
        to_source.append(judge.similarity(e, embeddings[p["source"]]))
        closer.append(to_target[-1] > to_source[-1])
        p.setdefault("scores", []).append(round(to_target[-1], 4))
        rates = error_rates(refs[p["source"]], asr.transcribe(wav)) if asr is not None else {}
        if rates:  # none when the judge heard nothing in the source
            cer.append(rates["cer"])
            wer.append(rates["wer"])
            p.setdefault("cer", []).append(round(rates["cer"], 4))
    return {"cos_to_target": float(np.mean(to_target)), "cos_to_source": float(np.mean(to_source)),
            "closer_to_target": float(np.mean(closer)), "pairs": len(pairs),
            **({"cer": float(np.mean(cer)), "wer": float(np.mean(wer)), "asr_pairs": len(cer)} if cer else {})}


@torch.no_grad()
def reconstruction_l1(model: vc.VoiceConverter, held: dict) -> float:
    """Teacher-forced L1 (normalized mel) of each held-out clip, its speaker given by the next held-out clip."""
    net, losses = model.net, []
    for clips in held.values():
        for a, b in zip(clips, clips[1:] + clips[:1]):
            wa = load_wav(a["path"], model.cfg.audio)
            mel = model.mel(wa)
            ref = model.mel(load_wav(b["path"], model.cfg.audio))
            p = model.source_pitch(wa, match_pitch=False)[None] if net.cfg.pitch else None
            x = content_input(net, wa, mel, model.cfg.audio)  # the mel, or a whisper model's states
            rec = net.decoder(net.content_encoder(x), net.speaker_encoder(ref), mel.shape[2], p)
            losses.append(float((rec - mel).abs().mean()))
    return float(np.mean(losses))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default.pt"), help="the model to adapt")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"), help="split with utterances.tsv")
    p.add_argument("--speakers", default="19,32,332,460", help="comma-separated dev speakers to adapt to")
    p.add_argument("--control", default="SF1,TM1", help="dev speakers not adapted to (what adaptation costs them)")
    p.add_argument("--adapt-seconds", type=float, default=120.0, help="speech per speaker used for adaptation")
    p.add_argument("--per-target", type=int, default=8, help="conversions per target speaker")
    p.add_argument("--minutes", type=float, default=10.0, help="adaptation time budget")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: AdaptConfig's)")
    p.add_argument("--lr", type=float, default=None, help="adaptation learning rate (default: AdaptConfig's)")
    p.add_argument("--parts", default=None, help="comma-separated parts to adapt (default: AdaptConfig's)")
    p.add_argument("--asr", default="base", choices=sorted(ASR_MODELS), help="ASR judge of the character error rate")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair draw")
    p.add_argument("--out", default="runs/adapt-dev", help="adaptation run, converted clips and results.json")
    return p.parse_args()


def print_table(results: dict, speakers: list[str], pairs: list[dict], control_pairs: list[dict]) -> None:
    b, a, asr = results["before"], results["after"], results["asr"]

    def cer(r: dict) -> str:
        return f"{r['cer']:.3f}" if "cer" in r else "n/a"

    print("\n| measure | before | after |\n|---|---|---|")
    print(f"| output ~ target, resemblyzer cosine ({len(pairs)} pairs) | {b['cos_to_target']:.3f} | "
          f"{a['cos_to_target']:.3f} |")
    for s in speakers:
        print(f"| ... speaker {s} | {b['per_speaker'][s]:.3f} | {a['per_speaker'][s]:.3f} |")
    print(f"| output ~ source | {b['cos_to_source']:.3f} | {a['cos_to_source']:.3f} |")
    print(f"| closer to the target than to the source | {b['closer_to_target']:.1%} | {a['closer_to_target']:.1%} |")
    print(f"| reconstruction L1 of held-out clips | {b['recon_l1_held_out']:.3f} | {a['recon_l1_held_out']:.3f} |")
    print(f"| CER, ASR judge Whisper {asr['judge']} ({b.get('asr_pairs', 0)} pairs) | {cer(b)} | {cer(a)} |")
    source = "n/a" if asr["source_cer"] is None else f"{asr['source_cer']:.3f}"  # n/a: outputs against transcripts
    print(f"| ... the sources' own CER ({asr['sources_with_text']} of {asr['sources']} sources have a text) | "
          f"{source} | {source} |")
    print(f"| control: other dev speakers, cosine ({len(control_pairs)} pairs) | "
          f"{b['control'].get('cos_to_target', float('nan')):.3f} | "
          f"{a['control'].get('cos_to_target', float('nan')):.3f} |")
    print(f"| control: CER | {cer(b['control'])} | {cer(a['control'])} |")
    diff = np.array([p_["scores"][1] - p_["scores"][0] for p_ in pairs])
    print(f"\nper pair, after - before: mean {diff.mean():+.3f} (standard error "
          f"{diff.std(ddof=1) / len(diff) ** 0.5 if len(diff) > 1 else float('nan'):.3f}); {(diff > 0).sum()} of "
          f"{len(diff)} pairs more similar after")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)

    data, out = Path(args.data), Path(args.out)
    with (data / "utterances.tsv").open(newline="") as f:
        rows = [{**r, "path": str(data / r["path"])} for r in csv.DictReader(f, delimiter="\t")]
    speakers, control = args.speakers.split(","), [s for s in args.control.split(",") if s]
    fit, held = split_speakers(rows, speakers, args.adapt_seconds)
    control_held = {s: sorted((r for r in rows if r["speaker"] == s), key=lambda r: r["path"])[-6:] for s in control}
    split = out / "adapt-data"
    split.mkdir(parents=True, exist_ok=True)
    with (split / "utterances.tsv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["path", "speaker", "dur_s"])
        w.writerows([[r["path"], s, r["dur_s"]] for s in speakers for r in fit[s]])
    pairs = make_pairs(rows, held, set(speakers) | set(control), args.per_target, args.seed)
    control_pairs = make_pairs(rows, control_held, set(speakers) | set(control), args.per_target // 2, args.seed + 1)

    cfg = AdaptConfig(minutes=args.minutes, threads=args.threads)
    cfg.steps = args.steps or cfg.steps
    cfg.lr = args.lr or cfg.lr
    cfg.parts = tuple(args.parts.split(",")) if args.parts else cfg.parts
    adapted = out / "adapted.pt"
    t0 = time.time()
    adapt(args.checkpoint, split, adapted, cfg, run=out / "run")
    wall = time.time() - t0
    print(f"adaptation: {wall / 60:.2f} min wall clock")

    judge, asr = SpeakerJudge(), AsrJudge(args.threads, model=args.asr)
    clips = {c for p_ in pairs + control_pairs for c in p_["judge"] + [p_["source"]]}
    embeddings = {c: judge.embed(load_wav(c)) for c in sorted(clips)}
    sources = sorted({p_["source"] for p_ in pairs + control_pairs})
    refs, source_asr = source_texts(asr, sources, {r["path"]: r["text"] for r in rows if r.get("text")})
    results: dict = {"wall_seconds_adapt": round(wall, 1), "args": vars(args), "config": vars(cfg),
                     "adapt_seconds": {s: round(sum(float(r["dur_s"]) for r in fit[s]), 1) for s in speakers},
                     "held_out_clips": {s: len(held[s]) for s in speakers}, "asr": {"judge": args.asr, **source_asr}}
    for name, path in (("before", args.checkpoint), ("after", adapted)):
        model = vc.load_model(path)
        results[name] = score(model, pairs, judge, embeddings, out / name, asr, refs)
        results[name]["recon_l1_held_out"] = reconstruction_l1(model, held)
        results[name]["control"] = (score(model, control_pairs, judge, embeddings, out / f"{name}-control", asr, refs)
                                    if control_pairs else {})
        by = defaultdict(list)
        for p_ in pairs:
            by[p_["target_speaker"]].append(p_["scores"][-1])
        results[name]["per_speaker"] = {s: float(np.mean(v)) for s, v in by.items()}
    results["pairs"], results["source_texts"] = pairs, refs
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results, speakers, pairs, control_pairs)
    print(f"adaptation wall clock {wall / 60:.2f} min; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
