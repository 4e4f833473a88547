"""Copy synthesis: what a vocoder alone loses, turning the mel of a real clip back into a waveform.

    python benchmarks/vocoder_copy.py --clips 20 [--vocoder-ckpt [NAME=]runs/vocoder/vocoder.pt ...] [--no-griffin-lim]
        [--true-phase]

For N dev clips (seeded draw): `log_mel` of the original, then Griffin-Lim (100 iterations) and each neural vocoder
given by --vocoder-ckpt (a file with a "vocoder" entry: `vc train-vocoder` output or an inference checkpoint; the
option repeats, so several vocoders meet the same clips in one run). With --true-phase, each neural vocoder's
magnitude is also heard with the original clip's phase ("NAME/true-phase": what a perfect phase would give; a
diagnosis of where the vocoder loses, not a vocoder). Each is scored by DNSMOS (overall, and its
signal and background parts; the originals too), by mel-cepstral distortion to the original (frame by frame, without
DTW: a resynthesis is time-aligned with its original) and by seconds of compute per second of audio.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vc.audio import load_wav, log_mel, save_wav, stft
from vc.checkpoint import MEL_FIELDS, load_checkpoint, read_config
from vc.config import AudioConfig
from vc.evaluate import format_table
from vc.judges import DnsmosJudge, mcd, mel_cepstrum, require, world_f0
from vc.vocoder import GriffinLim, NeuralVocoder, load_vocoder

ROOT = Path(__file__).resolve().parents[1]


def load_neural(path: str) -> tuple[NeuralVocoder, AudioConfig]:
    """The neural vocoder of a checkpoint, and the audio config it was trained with."""
    ckpt = load_checkpoint(path)  # any version: read as the current layout
    cfg = read_config(ckpt, path)
    return load_vocoder("vocos", cfg, ckpt.get("vocoder")), cfg.audio


class TruePhase:
    """A neural vocoder's magnitude with the original clip's phase (set `spectrum` before each call)."""

    def __init__(self, vocoder: NeuralVocoder):
        self.vocoder, self.spectrum = vocoder, None

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor, length: int) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.vocoder.bf16):  # as the vocoder runs
            log_mag, _ = self.vocoder.net.spectrum(mel.float()[None])
        return self.vocoder.net.synthesize(log_mag[0], self.spectrum.angle(), length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"), help="folder of audio clips")
    p.add_argument("--clips", type=int, default=20, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip draw")
    p.add_argument("--vocoder-ckpt", action="append", default=[],
                   help="[NAME=]checkpoint with a 'vocoder' entry; repeat for several (default: Griffin-Lim only)")
    p.add_argument("--no-griffin-lim", action="store_true", help="leave Griffin-Lim out")
    p.add_argument("--true-phase", action="store_true",
                   help="also each neural vocoder's magnitude with the original's phase")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    p.add_argument("--out", default="runs/vocoder-copy", help="resynthesized clips and results.json go here")
    args = p.parse_args()
    require(["mcd"] + ([] if args.no_dnsmos else ["dnsmos"]))

    cfg = AudioConfig()
    vocoders = {} if args.no_griffin_lim else {"griffin-lim": GriffinLim(cfg, n_iter=100)}
    for i, given in enumerate(args.vocoder_ckpt):
        name, _, path = given.rpartition("=")
        name = name or ("neural" if len(args.vocoder_ckpt) == 1 else f"neural{i + 1}")
        vocoders[name], neural_cfg = load_neural(path)
        if args.true_phase:
            vocoders[f"{name}/true-phase"] = TruePhase(vocoders[name])
        differ = [k for k in MEL_FIELDS if getattr(neural_cfg, k) != getattr(cfg, k)]
        if differ:
            raise SystemExit(f"error: {path}: its mel differs from the project's in {', '.join(differ)}")
    if not vocoders:
        raise SystemExit("error: nothing to compare: give --vocoder-ckpt or keep Griffin-Lim")
    paths = sorted(Path(args.data).rglob("*.flac")) + sorted(Path(args.data).rglob("*.wav"))
    if not paths:
        raise SystemExit(f"error: {args.data}: no .flac or .wav clips")
    rng = np.random.default_rng(args.seed)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(args.clips, len(paths)), replace=False))]
    dnsmos = None if args.no_dnsmos else DnsmosJudge(torch.get_num_threads())
    out = Path(args.out)
    rows = []
    for i, path in enumerate(paths):
        wav = load_wav(path, cfg)
        mel = log_mel(wav, cfg)
        for v in vocoders.values():
            if isinstance(v, TruePhase):
                v.spectrum = stft(torch.as_tensor(wav)[None], cfg)[0]
        # the original's F0 contour for every resynthesis too: MCD then compares envelopes, not F0 trackers' errors
        f0 = world_f0(wav, cfg.sample_rate)
        ref_mcep = mel_cepstrum(wav, f0, cfg.sample_rate)
        row = {"clip": str(path), "seconds_audio": len(wav) / cfg.sample_rate}
        if dnsmos:
            row.update({f"original_{k}": v for k, v in dnsmos.score(wav).items()})
        for name, vocoder in vocoders.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = vocoder(mel, len(wav)).numpy()
            row[f"{name}_rtf"] = (time.perf_counter() - t0) / row["seconds_audio"]
            row[f"{name}_mcd"] = mcd(mel_cepstrum(y, f0, cfg.sample_rate), ref_mcep, align=False)
            if dnsmos:
                row.update({f"{name}_{k}": v for k, v in dnsmos.score(y).items()})
            save_wav(out / name / f"{i:02d}_{path.stem}.wav", y, cfg.sample_rate)
        rows.append(row)
        print(f"{i + 1}/{len(paths)} {path.name} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                               if isinstance(v, float)), flush=True)

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in rows])) if key in rows[0] else None

    def dns(name: str) -> dict[str, float | None]:
        return {f"dnsmos_{k}": mean(f"{name}_{k}") for k in ("ovrl", "sig", "bak")}

    columns = {"original": {**dns("original"), "mcd_db": 0.0, "rtf": None}}
    for name in vocoders:
        columns[name] = {**dns(name), "mcd_db": mean(f"{name}_mcd"), "rtf": mean(f"{name}_rtf")}
    print(f"\n{len(rows)} clips, {sum(r['seconds_audio'] for r in rows):.0f} s of audio\n{format_table(columns)}")
    names = list(vocoders)
    if len(names) > 1 and not args.no_dnsmos:  # paired: the same clips, so the clip-to-clip spread cancels
        for name in names[1:]:
            d = np.array([r[f"{name}_ovrl"] - r[f"{names[0]}_ovrl"] for r in rows])
            print(f"DNSMOS overall, {name} - {names[0]}: {d.mean():+.3f} (standard error {d.std(ddof=1) / np.sqrt(len(d)):.3f})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": columns, "clips": rows}, indent=1))
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
