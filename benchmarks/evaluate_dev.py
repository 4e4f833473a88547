"""One-shot conversions between dev speakers (unseen in training), by the model and by a WORLD baseline, judged offline.

    python benchmarks/evaluate_dev.py --pairs 40 --systems source,world,model --vocoder griffin-lim --out runs/eval

Pairs (seeded) are a quarter each F->F, F->M, M->F, M->M. Sources are transcribed LibriSpeech clips where there are
any (so ASR error rates are measured against the text), except that every third cross-gender pair (the second,
fifth, ...) converts between the parallel VCC speakers (SF1, TM1), so that MCD to the target saying the same sentence
can be measured. Otherwise every second target is a speaker with another clip (for the speaker gap closed) and the
others are single-clip speakers.

The pairs of `--pairs 40 --seed 0` are kept in benchmarks/dev_pairs.tsv (`--pair-list`, the default when it matches
--pairs and --seed), so that figures compare across changes of this script; `--write-pairs` rewrites it.

Systems: `source` (no conversion: the floor of speaker similarity, the ceiling of intelligibility and quality),
`world` (benchmarks/world_vc.py, no learning), `model` (vc.load_model().convert), any number of further models
(`--model NAME=CHECKPOINT`: the system NAME) and `stream` (the causal model of --stream-checkpoint through the
streaming engine, block by block). ASR error rates come from every judge of `--asr` (default Whisper base, which
shares no weights with the converter's Whisper tiny.en content features, then tiny.en as `cer_tiny.en`). Converted clips and a TSV per
system (re-scorable with `vc evaluate`) go to --out, with results.json; one table compares the systems. Judges and
measures: see vc/evaluate.py. --probe adds the leakage probe: a fresh classifier naming the dev speaker from pooled
content codes, next to the same probe on input mels and chance level.
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
from world_vc import world_convert

import vc
from vc.registry import shipped_path
from vc.audio import load_wav, normalize_loudness, save_wav
from vc.config import VOCODERS, AudioConfig
from vc.content import content_input
from vc.evaluate import COLUMNS, JUDGES, Row, Scorer, evaluate, format_table, summarize
from vc.training.corrupt import colored_noise, mix, reverberate, room_impulse

ROOT = Path(__file__).resolve().parents[1]
GENDER_PAIRS = ["FF", "FM", "MF", "MM"]
SYSTEMS = ("source", "world", "model", "stream")
SUBSET_KEYS = ("cos_out_ref", "closer_to_target", "gap_closed", "cer", "pitch_gap_closed")
PAIR_LIST = ROOT / "benchmarks" / "dev_pairs.tsv"  # make_pairs(dev clips, 40, seed 0), fixed
PAIR_FIELDS = ("kind", "source", "target", "text", "parallel", "other", "source_speaker", "target_speaker")


def write_pairs(path: Path, pairs: list[dict], data: Path) -> None:
    """The pairs as a TSV, paths relative to the split folder `data`."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(PAIR_FIELDS)
        for pair in pairs:
            w.writerow(["" if pair[k] is None else Path(pair[k]).relative_to(data) if isinstance(pair[k], Path)
                        else pair[k] for k in PAIR_FIELDS])


def read_pairs(path: Path, data: Path) -> list[dict]:
    """The pairs of a `write_pairs` TSV, paths made absolute under `data`."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    paths = ("source", "target", "parallel", "other")
    return [{k: (data / v if k in paths else v) if v else None for k, v in r.items()} for r in rows]


def read_split(root: Path) -> list[dict]:
    """The rows of `root`/utterances.tsv, with `path` made absolute."""
    with (root / "utterances.tsv").open(newline="") as f:
        return [{**r, "path": root / r["path"]} for r in csv.DictReader(f, delimiter="\t")]


def make_pairs(clips: list[dict], n: int, seed: int) -> list[dict]:
    """n pairs {kind, source, target, text, parallel, other, source_speaker, target_speaker}, a quarter per kind."""
    rng = np.random.default_rng(seed)
    by_speaker, gender = defaultdict(list), {}
    for c in clips:
        by_speaker[c["speaker"]].append(c)
        gender[c["speaker"]] = c["gender"]
    texted = {g: [c for c in clips if c["text"] and c["gender"] == g] for g in "FM"}
    multi = {g: sorted(s for s in by_speaker if gender[s] == g and len(by_speaker[s]) > 1) for g in "FM"}
    single = {g: sorted(s for s in by_speaker if gender[s] == g and len(by_speaker[s]) == 1) for g in "FM"}
    vcc = {c["gender"]: c["speaker"] for c in clips if c["corpus"] == "vcc2016"}
    used: set[Path] = set()

    def pick(pool: list[dict]) -> dict:
        fresh = [c for c in pool if c["path"] not in used] or pool
        choice = fresh[rng.integers(len(fresh))]
        used.add(choice["path"])
        return choice

    pairs = []
    for i in range(n):
        kind, j = GENDER_PAIRS[i % 4], i // 4
        gs, gt = kind
        pair = {"kind": kind, "text": None, "parallel": None, "other": None}
        if gs != gt and j % 3 == 1 and gs in vcc and gt in vcc:
            tgt_clips = {c["path"].name: c for c in by_speaker[vcc[gt]]}
            src = pick([c for c in by_speaker[vcc[gs]] if c["path"].name in tgt_clips])
            pair["parallel"] = tgt_clips[src["path"].name]["path"]
            pool = [c for c in by_speaker[vcc[gt]] if c["path"] != pair["parallel"]]
            tgt_speaker = vcc[gt]
        else:
            src = pick(texted[gs] or [c for c in clips if c["gender"] == gs])
            candidates = [s for s in (multi if j % 2 == 0 else single)[gt] if s != src["speaker"]]
            candidates = candidates or [s for s in multi[gt] + single[gt] if s != src["speaker"]]
            tgt_speaker = str(rng.choice(candidates))
            pool = by_speaker[tgt_speaker]
        ref = pick(pool)
        others = [c for c in pool if c["path"] != ref["path"]]
        if others:
            pair["other"] = others[rng.integers(len(others))]["path"]
        pair.update(source=src["path"], target=ref["path"], text=src["text"] or None,
                    source_speaker=src["speaker"], target_speaker=tgt_speaker)
        pairs.append(pair)
    return pairs


def noisy_sources(pairs: list[dict], snr_db: float, folder: Path, reverb: bool = False,
                  targets: bool = False) -> list[dict]:
    """The pairs with a copy of each source (`input_source`: what is converted; the judges still compare with the
    clean clips) with coloured noise `snr_db` below it (seed 90000 + pair index: the noise of the input-check fit
    and of denoising training uses other seeds), written to `folder`. With `reverb`, the clip is first heard in a
    simulated room (seed 95000 + pair index; training's rooms come from its own seed). With `targets`, the target
    clips get the same treatment (`input_target`; seeds 190000 and 195000 + pair index)."""
    cfg = AudioConfig()

    def corrupted(path: str, seed: int, tag: str) -> Path:
        rng = np.random.default_rng(seed)
        wav = load_wav(path, cfg, trim=False)
        noise = colored_noise(len(wav), float(rng.uniform(0, 2)), rng)
        if reverb:
            wav = reverberate(wav.astype(np.float64), room_impulse(np.random.default_rng(seed + 5000), cfg.sample_rate))
        noisy = mix(wav, noise, snr_db)
        return save_wav(folder / f"{tag}_{Path(path).stem}_{snr_db:g}dB{'_room' if reverb else ''}.wav",
                        (noisy / max(1.0, float(np.abs(noisy).max()))).astype(np.float32), cfg.sample_rate)

    out = []
    for i, p in enumerate(pairs):
        changed = {"input_source": corrupted(p["source"], 90000 + i, f"{i:02d}")}
        if targets:
            changed["input_target"] = corrupted(p["target"], 190000 + i, f"{i:02d}t")
        out.append({**p, **changed})
    return out


def convert_all(system: str, pairs: list[dict], out: Path, args: argparse.Namespace) -> list[Row]:
    """Rows to score for one system; converted clips are written to out/system/."""
    if system == "source":
        return [Row(converted=p.get("input_source", p["source"]), source=p["source"], target=p["target"], text=p["text"],
                    parallel=p["parallel"], other=p["other"]) for p in pairs]
    options = {} if args.timbre_match is None else {"timbre_match": args.timbre_match}
    if system in args.models:
        model = vc.load_model(args.models[system], vocoder=args.vocoder)
        model.cfg = model.cfg.replace(convert=args.convert_overrides.get(system, {}))
        sr = model.sample_rate

        def convert(source: Path, target: Path) -> np.ndarray:
            return model.convert(source, target, **options)
    elif system == "stream":
        streamer = vc.load_model(args.stream_checkpoint)
        streamer.cfg = streamer.cfg.replace(convert=args.convert_overrides.get(system, {}))
        sr = streamer.sample_rate

        def convert(source: Path, target: Path) -> np.ndarray:
            stream = streamer.stream(target, block_seconds=args.block_ms / 1000, **options)
            return normalize_loudness(stream.run(streamer.load(source, trim=False)), sr, streamer.cfg.audio.target_db)
    else:
        cfg = AudioConfig()
        sr = cfg.sample_rate

        def convert(source: Path, target: Path) -> np.ndarray:
            return world_convert(load_wav(source, cfg), load_wav(target, cfg), sr)
    rows = []
    for i, p in enumerate(pairs):
        t0 = time.perf_counter()
        wav = convert(p.get("input_source", p["source"]), p.get("input_target", p["target"]))
        seconds = time.perf_counter() - t0
        path = save_wav(out / system / f"{i:02d}_{p['kind']}_{p['source_speaker']}_to_{p['target_speaker']}.wav",
                        wav, sr)
        rows.append(Row(converted=path, source=p["source"], target=p["target"], text=p["text"],
                        parallel=p["parallel"], other=p["other"], seconds=seconds))
        print(f"{system} {i + 1}/{len(pairs)} {p['kind']} {p['source_speaker']} -> {p['target_speaker']} "
              f"({seconds:.2f} s)", flush=True)
    return rows


def write_tsv(path: Path, rows: list[Row]) -> None:
    """The rows as a `vc evaluate` list."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(COLUMNS)
        w.writerows([["" if getattr(r, k) is None else getattr(r, k) for k in COLUMNS] for r in rows])


def leakage_probe(model: vc.VoiceConverter, clips: list[dict], seg: int = 128, seed: int = 0) -> dict[str, float]:
    """Fresh MLP probes on [mean, std] of content-code and mel segments, for dev speakers with several clips."""
    by_speaker = defaultdict(list)
    for c in clips:
        by_speaker[c["speaker"]].append(c["path"])
    speakers = sorted(s for s in by_speaker if len(by_speaker[s]) >= 4)
    feats: dict[str, list] = {"content": [], "mel": []}
    labels, split = [], []
    for k, spk in enumerate(speakers):
        for j, path in enumerate(sorted(by_speaker[spk])):
            wav = model.load(path)
            mel = model.mel(wav)
            with torch.inference_mode():
                code = model.net.content_encoder(content_input(model.net, wav, mel, model.cfg.audio))
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


def parse_args() -> argparse.Namespace:
    """The options; `models` (system name -> checkpoint) and `system_list` (the systems in order) are added."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="the `model` system's checkpoint (default: the shipped one)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="a further model, scored as the system NAME (repeatable; list NAME in --systems or not)")
    p.add_argument("--asr", default="base,tiny.en",
                   help="ASR judges, comma-separated from base, tiny.en: the first gives cer and wer, the others "
                   "cer_NAME")
    p.add_argument("--pair-list", default=None,
                   help=f"pairs TSV (default: {PAIR_LIST.name} when --pairs 40 --seed 0, else drawn)")
    p.add_argument("--write-pairs", action="store_true", help="write the drawn pairs to --pair-list and stop")
    p.add_argument("--vocoder", default=None, choices=VOCODERS,
                   help="the model's mel-to-waveform stage (default: the checkpoint's own, else griffin-lim)")
    p.add_argument("--stream-checkpoint", default=str(shipped_path("stream")),
                   help="the causal model of the `stream` system (the streaming engine of `vc live`)")
    p.add_argument("--block-ms", type=float, default=25.0, help="block length of the `stream` system")
    p.add_argument("--timbre-match", type=float, default=None, help="the model's timbre match (default: its own)")
    p.add_argument("--network-phase", action="append", default=[], metavar="NAME",
                   help="the system NAME keeps the neural vocoder's phase everywhere (`convert.harmonic_phase: 0`; "
                   "repeatable)")
    p.add_argument("--convert", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="the system NAME converts with `convert.KEY` set to VALUE, a number (e.g. "
                   "model:mel_contrast=1; repeatable)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"), help="split with utterances.tsv")
    p.add_argument("--pairs", type=int, default=40, help="number of pairs, a quarter per gender pairing")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair draw")
    p.add_argument("--systems", default="source,world,model", help=f"comma-separated, from: {', '.join(SYSTEMS)}")
    p.add_argument("--out", default="runs/eval", help="converted clips, TSVs and results.json go here")
    p.add_argument("--no-asr", action="store_true", help="skip the ASR error rates")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    p.add_argument("--no-mcd", action="store_true", help="skip mel-cepstral distortion")
    p.add_argument("--probe", action="store_true", help="also run the content-code leakage probe on the model")
    p.add_argument("--noise-snr", type=float, default=None, metavar="DB",
                   help="convert noisy copies of the sources: coloured noise (1/f^b, b in 0..2, seeded per pair "
                   "with seeds no training uses) this many dB below the speech; CER against the clean text")
    p.add_argument("--reverb", action="store_true",
                   help="with --noise-snr: put each noisy source in a simulated room first (seeded as the noise)")
    p.add_argument("--noisy-targets", action="store_true",
                   help="with --noise-snr: corrupt the target (reference) clips too")
    args = p.parse_args()
    extra = dict(m.split("=", 1) for m in args.model if "=" in m)
    if len(extra) != len(args.model) or set(extra) & set(SYSTEMS):
        p.error("--model: NAME=CHECKPOINT, with a NAME other than " + ", ".join(SYSTEMS))
    args.models = {"model": args.checkpoint, **extra}
    args.convert_overrides = defaultdict(dict)
    for name in args.network_phase:
        args.convert_overrides[name]["harmonic_phase"] = 0.0
    for item in args.convert:
        name, _, setting = item.partition(":")
        key, _, value = setting.partition("=")
        try:
            args.convert_overrides[name][key] = float(value)
        except ValueError:
            p.error(f"--convert {item}: NAME:KEY=VALUE with a number for VALUE")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    systems += [name for name in extra if name not in systems]
    if not systems or set(systems) - set(SYSTEMS) - set(extra):
        p.error(f"--systems: choose from {', '.join(SYSTEMS)} and the --model names")
    args.system_list = systems
    return args


def score_system(rows: list[Row], pairs: list[dict], scorer: Scorer, more_asr: list[Scorer]) -> dict:
    """`evaluate`'s result for one system's conversions, with the further ASR judges' error rates (cer_NAME,
    wer_NAME, src_cer_NAME) and the same- and cross-gender subsets added to its summary."""
    result = evaluate(rows, scorer=scorer, verbose=True)
    for judge in more_asr:  # the same rows by another ASR
        other = evaluate(rows, scorer=judge)
        for row, extra_row in zip(result["rows"], other["rows"]):
            row.update({f"{k}_{judge.asr}": extra_row[k] for k in ("cer", "wer", "src_cer") if k in extra_row})
        result["summary"].update({f"{k}_{judge.asr}": v for k, v in other["summary"].items()
                                  if k in ("cer", "wer", "src_cer", "cer_pooled", "src_cer_pooled")})
    for scope, kinds in (("same-gender", ("FF", "MM")), ("cross-gender", ("FM", "MF"))):
        subset = summarize([r for r, p in zip(result["rows"], pairs) if p["kind"] in kinds])
        result["summary"].update({f"{k} ({scope})": subset[k] for k in SUBSET_KEYS if k in subset})
    return result


def main() -> None:
    args = parse_args()
    systems = args.system_list
    asr = [a.strip() for a in args.asr.split(",") if a.strip()]

    judges = [j for j in JUDGES if not getattr(args, f"no_{j}", False)]
    scorer = Scorer(judges, asr=asr[0] if asr else "base")  # checks the eval extra before any conversion
    more_asr = [Scorer(["asr"], asr=a) for a in asr[1:]] if "asr" in judges else []
    data = Path(args.data)
    clips = read_split(data)
    pair_list = Path(args.pair_list) if args.pair_list else PAIR_LIST
    if args.write_pairs:
        write_pairs(pair_list, make_pairs(clips, args.pairs, args.seed), data)
        print(f"wrote {pair_list}")
        return
    fixed = args.pair_list is not None or (args.pairs == 40 and args.seed == 0 and pair_list.is_file())
    pairs = read_pairs(pair_list, data) if fixed else make_pairs(clips, args.pairs, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.noise_snr is not None:
        pairs = noisy_sources(pairs, args.noise_snr, out / "noisy-sources", args.reverb, args.noisy_targets)
    results = {}
    for system in systems:
        rows = convert_all(system, pairs, out, args)
        write_tsv(out / f"{system}.tsv", rows)
        results[system] = score_system(rows, pairs, scorer, more_asr)
    summaries = {s: results[s]["summary"] for s in systems}
    if args.probe:
        for name in systems:
            if name in args.models:
                summaries[name].update(leakage_probe(vc.load_model(args.models[name], vocoder=args.vocoder), clips))
    print(f"\n{format_table(summaries)}")
    pairs_json = [{k: str(v) if isinstance(v, Path) else v for k, v in pair.items()} for pair in pairs]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "pairs": pairs_json, "systems": results},
                                                 indent=1, default=str))
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
