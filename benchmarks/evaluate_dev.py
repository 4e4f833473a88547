"""One-shot conversions between dev speakers (unseen in training), judged by resemblyzer; and a leakage probe.

    python benchmarks/evaluate_dev.py --checkpoint checkpoints/default.pt --data ../shared/data/dev --pairs 40

For every pair a clip of speaker A (source) is converted with one clip of speaker B (target reference). Resemblyzer
(an independent speaker-verification model; pip install -e ".[eval]") embeds the output, the source and the
reference. Reported: cos(output, reference), cos(output, source), the share of outputs closer to the reference than
to the source, and for context cos(source, reference) (no conversion) and cos(another clip of B, reference) (the
ceiling). The leakage probe trains a fresh classifier to name the dev speaker from pooled content codes of some
utterances and tests it on others, next to the same probe on the input mels and chance level.
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
import torch.nn.functional as F

import vc
from vc.audio import save_wav

GENDER_PAIRS = [("F", "F"), ("F", "M"), ("M", "F"), ("M", "M")]


def read_split(root: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    clips, gender = defaultdict(list), {}
    with (root / "utterances.tsv").open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            clips[row["speaker"]].append(root / row["path"])
            gender[row["speaker"]] = row["gender"]
    return clips, gender


def make_pairs(clips, gender, n: int, seed: int) -> list[tuple[Path, Path, str, str, str]]:
    """n (source, reference, source speaker, target speaker, kind) pairs, a quarter of each gender pairing."""
    rng = np.random.default_rng(seed)
    by_gender = {g: sorted(s for s in clips if gender[s] == g) for g in "FM"}
    pairs = []
    for i in range(n):
        gs, gt = GENDER_PAIRS[i % 4]
        src = str(rng.choice(by_gender[gs]))
        tgt = str(rng.choice([s for s in by_gender[gt] if s != src]))
        pairs.append((clips[src][rng.integers(len(clips[src]))], clips[tgt][rng.integers(len(clips[tgt]))],
                      src, tgt, gs + gt))
    return pairs


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def leakage_probe(model: vc.VoiceConverter, clips, seg: int = 128, seed: int = 0) -> dict[str, float]:
    """Fresh MLP probes on [mean, std] of content-code and mel segments, for dev speakers with several clips."""
    speakers = sorted(s for s in clips if len(clips[s]) >= 4)
    feats: dict[str, list] = {"content": [], "mel": []}
    labels, split = [], []
    for k, spk in enumerate(speakers):
        for j, path in enumerate(sorted(clips[spk])):
            mel = model.mel(model.load(path))
            with torch.inference_mode():
                code = model.net.content_encoder(mel)
            n = mel.shape[2] // seg
            for i in range(n):
                for name, x, s in (("content", code, seg // 2), ("mel", mel, seg)):
                    w = x[0, :, i * s:(i + 1) * s]
                    feats[name].append(torch.cat([w.mean(1), w.std(1)]))
            labels += [k] * n
            split += [j % 4 == 0] * n  # every fourth clip of a speaker is for testing
    y, test = torch.tensor(labels), torch.tensor(split)
    out = {"probe_speakers": len(speakers), "probe_chance": 1 / len(speakers)}
    for name, xs in feats.items():
        x = torch.stack(xs)
        x = (x - x[~test].mean(0)) / (x[~test].std(0) + 1e-5)
        torch.manual_seed(seed)
        nn = torch.nn
        probe = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, len(speakers)))
        opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=1e-4)
        for _ in range(500):
            opt.zero_grad()
            F.cross_entropy(probe(x[~test]), y[~test]).backward()
            opt.step()
        with torch.no_grad():
            out[f"probe_acc_{name}"] = float((probe(x[test]).argmax(1) == y[test]).float().mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"))
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/eval", help="converted clips and results.json go here")
    args = p.parse_args()

    from resemblyzer import VoiceEncoder, preprocess_wav  # the judge: never used in training

    judge = VoiceEncoder("cpu", verbose=False)
    model = vc.load_model(args.checkpoint)
    clips, gender = read_split(Path(args.data))
    out = Path(args.out)

    def embed(wav: np.ndarray) -> np.ndarray:
        return judge.embed_utterance(preprocess_wav(wav, source_sr=model.sample_rate))

    rows, seconds, compute = [], 0.0, 0.0
    for i, (src, ref, s_spk, t_spk, kind) in enumerate(make_pairs(clips, gender, args.pairs, args.seed)):
        t0 = time.perf_counter()
        wav = model.convert(src, ref)
        compute += time.perf_counter() - t0
        seconds += len(wav) / model.sample_rate
        save_wav(out / f"{i:02d}_{kind}_{s_spk}_to_{t_spk}.wav", wav, model.sample_rate)
        e_out, e_src, e_ref = embed(wav), embed(model.load(src)), embed(model.load(ref))
        others = [c for c in clips[t_spk] if c != ref]
        row = {"pair": i, "kind": kind, "source": str(src), "reference": str(ref),
               "cos_out_ref": cos(e_out, e_ref), "cos_out_src": cos(e_out, e_src), "cos_src_ref": cos(e_src, e_ref)}
        if others:
            row["cos_other_ref"] = cos(embed(model.load(others[0])), e_ref)
        row["closer_to_target"] = row["cos_out_ref"] > row["cos_out_src"]
        rows.append(row)
        print(f"{i:2d} {kind} {s_spk:>5} -> {t_spk:<5} out~ref {row['cos_out_ref']:.3f}  out~src "
              f"{row['cos_out_src']:.3f}  src~ref {row['cos_src_ref']:.3f}", flush=True)

    def mean(key, subset=rows):
        vals = [r[key] for r in subset if key in r]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {"pairs": len(rows), "cos_out_ref": mean("cos_out_ref"), "cos_out_src": mean("cos_out_src"),
               "cos_src_ref": mean("cos_src_ref"), "cos_other_ref": mean("cos_other_ref"),
               "closer_to_target": mean("closer_to_target"), "rtf": compute / seconds}
    for kind in ("FF", "FM", "MF", "MM"):
        sub = [r for r in rows if r["kind"] == kind]
        summary[f"closer_to_target_{kind}"] = mean("closer_to_target", sub)
        summary[f"cos_out_ref_{kind}"] = mean("cos_out_ref", sub)
    summary.update(leakage_probe(model, clips))
    print("\n| measure | value |\n|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1))
    print(f"\nwrote {out / 'results.json'} and {len(rows)} converted clips")


if __name__ == "__main__":
    main()
