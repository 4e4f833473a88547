"""The `vc` command: convert, stream, live, prepare, train, adapt, train-vocoder, export, evaluate, bench."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__
from .config import LAYOUTS, PARTS, VOCODERS, AdaptConfig
from .convert_cli import add_convert
from .errors import VCError, VCWarning, reason
from .files import describe, write_text
from .options import (BLOCK_MS, COUNT, JOBS, LEARNING_RATE, NON_NEGATIVE, PITCH_SHIFT, POSITIVE, RATIO, STEP, STEPS,
                      THREADS, TIMBRE_MATCH, threads_list)


def _train(args: argparse.Namespace) -> int:
    from .config import load_recipe
    from .training.converter import train

    cfg = load_recipe(args.recipe)
    if args.steps is not None:
        cfg = cfg.replace(train={"steps": args.steps})
    if args.whisper_weights is not None:
        cfg = cfg.replace(train={"whisper_weights": args.whisper_weights})
    try:
        train(cfg, args.data, args.out, dev=args.dev, max_minutes=args.max_minutes, until=args.until,
              device=args.device)
    except KeyboardInterrupt:
        return 130
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import ExtractLimits, prepare

    limits = ExtractLimits(ratio=args.max_extract_ratio, max_bytes=args.max_extract_gb * 1e9)
    prepare(args.layout, args.source, args.out, min_speaker_seconds=args.min_speaker_seconds,
            require_text=args.require_text, jobs=args.jobs, limits=limits)
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from .training.adapt import adapt

    cfg = AdaptConfig(parts=tuple(args.parts.split(",")), minutes=args.minutes or None, threads=args.threads)
    for name in ("steps", "lr", "batch_size"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    try:
        adapt(args.checkpoint, args.data, args.out, cfg, run=args.run, device=args.device)
    except KeyboardInterrupt:
        return 130
    return 0


def _add_prepare_and_adapt(sub) -> None:
    r = sub.add_parser("prepare", help="check a corpus and write its utterances.tsv for train and adapt",
                       description="Scan SOURCE in LAYOUT, check every clip (not audio, silent, too short, "
                       "clipped, low sample rate, long, missing transcript), print minutes per speaker, and write "
                       "OUT/utterances.tsv with the usable clips and OUT/report.txt. Stops with advice when a "
                       "speaker has too little speech. See recipes/README.md.")
    r.add_argument("layout", choices=LAYOUTS, help="folder: one sub-folder of clips per speaker; vctk; libritts; "
                   "librispeech")
    r.add_argument("source", help="a folder, an archive (.tar.gz, .tar, .zip, ...) or a URL of one")
    r.add_argument("--out", required=True, help="folder for utterances.tsv, the report, downloads and extractions")
    r.add_argument("--min-speaker-seconds", type=NON_NEGATIVE, default=30.0,
                   help="stop when a speaker has less usable speech than this (default 30; 0 to allow any)")
    r.add_argument("--require-text", action="store_true", help="drop clips without a transcript")
    r.add_argument("--jobs", "-j", type=JOBS, default=1, help="processes that read and check the audio")
    r.add_argument("--max-extract-ratio", type=RATIO, default=100.0,
                   help="refuse an archive that unpacks to more than this many times its size (default 100; "
                   "audio corpora unpack to 1 to 3 times)")
    r.add_argument("--max-extract-gb", type=POSITIVE, default=500.0,
                   help="refuse an archive that unpacks to more than this many GB (default 500)")
    r.set_defaults(func=_prepare)

    d = AdaptConfig()
    a = sub.add_parser("adapt", help="fine-tune a model on new speakers (a few minutes of speech each)",
                       description="Fine-tune CHECKPOINT on the speakers of --data (utterances.tsv from `vc "
                       "prepare`, or one folder per speaker), by default only the speaker encoder and the decoder's "
                       "AdaIN layers, and export --out with the checkpoint's vocoder. Resumes when run again.")
    a.add_argument("checkpoint", help="inference checkpoint to start from, e.g. checkpoints/default.pt")
    a.add_argument("--data", required=True, help="the new speakers: a folder with utterances.tsv or one per speaker")
    a.add_argument("--out", required=True, help="adapted checkpoint to write, e.g. checkpoints/mine.pt")
    a.add_argument("--parts", default=",".join(d.parts),
                   help=f"comma-separated parts to fine-tune, from: {', '.join(PARTS)} "
                   f"(default {','.join(d.parts)})")
    a.add_argument("--minutes", type=NON_NEGATIVE, default=d.minutes,
                   help=f"time budget (default {d.minutes}; 0: none)")
    a.add_argument("--steps", type=STEPS, default=None, help=f"at most this many steps (default {d.steps})")
    a.add_argument("--lr", type=LEARNING_RATE, default=None, help=f"peak learning rate (default {d.lr})")
    a.add_argument("--batch-size", type=COUNT, default=None, help=f"segments per step (default {d.batch_size})")
    a.add_argument("--run", default=None, help="work folder: features, last.pt, TensorBoard (default OUT.adapt)")
    a.add_argument("--threads", type=THREADS, default=0, help="torch threads (0: torch's default)")
    a.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    a.set_defaults(func=_adapt)


def _vocoder_settings(args: argparse.Namespace):
    """`vc train-vocoder`'s options as a VocoderTrainConfig."""
    from .training.vocoder import ADV_WEIGHT, VocoderTrainConfig, with_adversary

    cfg = VocoderTrainConfig(threads=args.threads)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.lr is not None:
        cfg.lr = args.lr
    if args.adversarial or args.adv_weight is not None or args.mpd:
        cfg = with_adversary(cfg, ADV_WEIGHT if args.adv_weight is None else args.adv_weight, mpd=args.mpd)
    if args.disc_start is not None:
        cfg.disc_start = args.disc_start
    return cfg


def _train_vocoder(args: argparse.Namespace) -> int:
    from .training.vocoder import train_vocoder

    try:
        train_vocoder(args.data, args.out, cfg=_vocoder_settings(args), init=args.init, causal=args.causal or None,
                      finetune_on=args.finetune_on, max_minutes=args.max_minutes)
    except KeyboardInterrupt:  # saved; the loop said how to resume
        return 130
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    import json

    from .export_onnx import export_onnx, format_report

    report = export_onnx(args.checkpoint, args.output, vocoder_ckpt=args.vocoder_ckpt)
    print(format_report(report))
    write_text(Path(args.output) / "vc-onnx-check.json", json.dumps(report, indent=1))
    print(f"{args.checkpoint} -> {args.output}/ ({', '.join(g['file'] for g in report['graphs'].values())})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoint import build_model, export_inference, load_checkpoint, with_vocoder

    if args.onnx:
        return _export_onnx(args)
    for given in filter(None, (args.checkpoint, args.vocoder_ckpt)):
        if os.path.realpath(given) == os.path.realpath(args.output):
            raise VCError(f"{args.output}: the export would replace its own input {given}; choose another output")
    ckpt = load_checkpoint(args.checkpoint)
    net, cfg = build_model(ckpt, args.checkpoint)
    meta = dict(ckpt.get("meta", {}))
    if "step" in ckpt:
        meta["steps"] = ckpt["step"]
    vocoder = ckpt.get("vocoder")
    if args.vocoder_ckpt:
        cfg, vocoder = with_vocoder(cfg, args.vocoder_ckpt)  # refuses a vocoder of other mels
        meta["vocoder"] = str(args.vocoder_ckpt)
    path = export_inference(args.output, net, cfg, meta, vocoder=vocoder)
    print(f"{args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _stream_model(args: argparse.Namespace):
    """The streaming model and the `Stream` of `vc stream` and `vc live`."""
    from .api import load_model
    from .batch import target_clips

    model = load_model(args.checkpoint or "stream")
    options = {} if args.timbre_match is None else {"timbre_match": args.timbre_match}
    return model.stream(target_clips(args.target), block_seconds=args.block_ms / 1000,
                        pitch_shift=args.pitch_shift, match_pitch=not args.no_match_pitch, **options)


def _stream(args: argparse.Namespace) -> int:
    from .batch import Job, check_paths, output_kind, target_clips
    from .stream import stream_file

    if output_kind(args.output) != "file":
        raise VCError(f"{args.output}: vc stream writes a .wav or .flac file")
    check_paths([Job(Path(args.input), Path(args.output), "")],
                [("the target clip", c) for c in target_clips(args.target)], [])
    r = stream_file(_stream_model(args), args.input, args.output)
    print(f"{args.input} -> {args.output} ({r['seconds']:.2f} s): latency {r['latency_ms']:.1f} ms "
          f"({r['block_ms']:.1f} ms blocks); compute per block mean {r['mean_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, p99.9 {r['p999_ms']:.2f} ms, max {r['max_ms']:.2f} ms "
          f"({100 * r['real_time_share']:.0f}% of the block; {r['blocks']} blocks timed); "
          f"real-time factor {r['rtf']:.3f}")
    return 0


def _live(args: argparse.Namespace) -> int:
    from .live import list_devices, run_live

    if args.list_devices:
        print(list_devices())
        return 0
    if not args.target:
        raise VCError("vc live needs --target (a clip of the voice to speak in)")
    from .live import _sounddevice

    _sounddevice()  # no device: say so before loading the model
    run_live(_stream_model(args), input_device=args.input_device, output_device=args.output_device,
             seconds=args.seconds)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import JUDGES, evaluate, print_table, read_rows

    out = Path(args.json) if args.json else Path(args.list).with_suffix(".json")
    if os.path.realpath(out) == os.path.realpath(args.list):
        raise VCError(f"{out}: the results would replace the list {args.list}; give another --json")
    judges = [j for j in JUDGES if not getattr(args, f"no_{j}", False)]
    result = evaluate(read_rows(args.list), judges, verbose=not args.quiet, asr=args.asr)
    print_table(result["summary"])
    write_text(out, json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 1 if result["summary"]["failed"] else 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from .bench import bench, format_table

    if (args.input is None) != (args.target is None):
        raise VCError("give both --input and --target, or neither (the default dev clips)")
    result = bench(Path(args.input) if args.input else None, Path(args.target) if args.target else None,
                   checkpoint=args.checkpoint, threads=tuple(args.threads), vocoders=tuple(args.vocoders),
                   runs=args.runs, seconds=args.seconds)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def _add_stream_and_live(sub) -> None:
    def stream_options(q: argparse.ArgumentParser, required: bool) -> None:
        q.add_argument("--target", "-t", action="append", required=required,
                       help="a clip of the target voice, or a folder of one speaker's clips (repeatable)")
        q.add_argument("--checkpoint", default=None,
                       help="a streaming (causal) checkpoint (default: the shipped checkpoints/stream.pt)")
        q.add_argument("--block-ms", type=BLOCK_MS, default=25.0,
                       help="block length in ms, rounded to a multiple of 25 ms (the latency is the block + 50 ms)")
        q.add_argument("--pitch-shift", type=PITCH_SHIFT, default=0.0, metavar="SEMITONES")
        q.add_argument("--no-match-pitch", action="store_true", help="keep the source's pitch register")
        q.add_argument("--timbre-match", type=TIMBRE_MATCH, default=None, metavar="0..1")

    s = sub.add_parser("stream", help="convert a file with the streaming engine of `vc live`",
                       description="Feed a file block by block through the streaming converter (what `vc live` "
                       "does with a microphone) and print the latency and the compute time per block.")
    s.add_argument("input", help="source audio file")
    s.add_argument("--output", "-o", required=True, help="output .wav or .flac")
    stream_options(s, required=True)
    s.set_defaults(func=_stream)

    li = sub.add_parser("live", help="microphone in, converted voice out (pip install -e \".[live]\")",
                        description="Convert the microphone live into the target voice and play it.")
    stream_options(li, required=False)
    li.add_argument("--input-device", default=None, help="input device index or name (see --list-devices)")
    li.add_argument("--output-device", default=None, help="output device index or name")
    li.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    li.add_argument("--seconds", type=POSITIVE, default=None, help="stop after this many seconds (default: Ctrl-C)")
    li.set_defaults(func=_live)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: vc convert: argument --jobs: 0 is out of range (...)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_train_vocoder(sub) -> None:
    """`vc train-vocoder` and its options."""
    w = sub.add_parser("train-vocoder", help="train the neural vocoder (resumes from OUT/vocoder-last.pt)",
                       description="Train the Vocos-style vocoder on the audio of --data; with --finetune-on, "
                       "continue from --init on that converter's own reconstructions. Writes OUT/vocoder.pt; bundle "
                       "it into a converter with `vc export --vocoder-ckpt`.")
    w.add_argument("--data", required=True, help="audio: a folder with utterances.tsv, or one folder per speaker")
    w.add_argument("--out", required=True, help="run folder")
    w.add_argument("--steps", type=STEPS, default=None, help="training steps (default 12000)")
    w.add_argument("--init", default=None, help="start from this vocoder file (OUT/vocoder.pt of an earlier run)")
    w.add_argument("--finetune-on", default=None, help="converter checkpoint whose reconstructions to train on")
    w.add_argument("--lr", type=LEARNING_RATE, default=None, help="peak learning rate (default 5e-4)")
    w.add_argument("--threads", type=THREADS, default=0, help="torch threads (0: torch's default)")
    w.add_argument("--causal", action="store_true", help="a streamable vocoder that sees past frames only")
    w.add_argument("--max-minutes", type=POSITIVE, default=None, help="stop (and checkpoint) after this many minutes")
    w.add_argument("--adversarial", action="store_true", help="train with a multi-resolution discriminator too "
                   "(for fine-tuning; about 2x slower a step): adversarial loss 0.1, feature matching 0.2")
    w.add_argument("--adv-weight", type=POSITIVE, default=None,
                   help="adversarial loss weight (implies --adversarial; default 0.1); feature matching: twice it")
    w.add_argument("--mpd", action="store_true", help="add the multi-period discriminator (implies --adversarial)")
    w.add_argument("--disc-start", type=STEP, default=None,
                   help="steps the discriminator trains alone before the vocoder sees its losses (default 500)")
    w.set_defaults(func=_train_vocoder)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="vc", description="One-shot voice conversion on a CPU.")
    p.add_argument("--version", action="version", version=f"vc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    add_convert(sub)

    t = sub.add_parser("train", help="train a model (resumes from OUT/last.pt when present)")
    t.add_argument("recipe", help="recipe YAML overriding the config defaults (e.g. recipes/default.yaml)")
    t.add_argument("--data", required=True, nargs="+",
                   help="training split: a folder with utterances.tsv, or one folder per speaker; several folders "
                   "are pooled (the same speaker id in two folders is one speaker)")
    t.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, exported model.pt")
    t.add_argument("--dev", default=None, help="validation split (default: a 'dev' folder beside --data, if any)")
    t.add_argument("--steps", type=STEPS, default=None, help="override the recipe's number of steps")
    t.add_argument("--max-minutes", type=POSITIVE, default=None, help="stop (and checkpoint) after this many minutes")
    t.add_argument("--until", type=STEPS, default=None, help="stop (and checkpoint) at this step: a later run resumes")
    t.add_argument("--whisper-weights", default=None, help="for model.content_features whisper: the encoder file "
                   "(vc.whisper.export_weights) instead of the recipe's train.whisper_weights")
    t.add_argument("--device", default="auto", help="cpu, cuda, or auto (the GPU where there is one); under "
                   "torchrun each process takes cuda:LOCAL_RANK")
    t.set_defaults(func=_train)
    _add_prepare_and_adapt(sub)

    e = sub.add_parser("export", help="strip a training checkpoint to an inference checkpoint (weights and config), "
                       "or write its networks as ONNX (--onnx)")
    e.add_argument("checkpoint", help="training checkpoint, e.g. runs/default/last.pt")
    e.add_argument("output", help="inference checkpoint to write, e.g. checkpoints/default.pt (with --onnx: a folder)")
    e.add_argument("--vocoder-ckpt", default=None, help="bundle this vocoder (OUT/vocoder.pt of `vc train-vocoder`)")
    e.add_argument("--onnx", action="store_true",
                   help="write content_encoder, speaker_encoder, decoder and vocoder .onnx into the OUTPUT folder, "
                   "check them against torch under onnxruntime and time both (pip install -e \".[export]\")")
    e.set_defaults(func=_export)

    add_train_vocoder(sub)

    b = sub.add_parser("bench", help="real-time factor, cold start, peak memory and stage shares of a conversion",
                       description="Time `vc convert` of one clip end to end (read to write) in fresh processes, "
                       "per thread count and vocoder, with each stage's share; print a markdown table.")
    b.add_argument("--input", default=None, help="source clip (default: 30 s of a ../shared/data/dev speaker)")
    b.add_argument("--target", default=None, help="target clip (default: another dev speaker's clip)")
    b.add_argument("--seconds", type=POSITIVE, default=30.0, help="length of the default source clip")
    b.add_argument("--threads", type=threads_list, nargs="+", default=[1, 2], help="torch thread counts to measure")
    b.add_argument("--vocoders", nargs="+", default=list(VOCODERS), choices=VOCODERS, help="vocoders to measure")
    b.add_argument("--runs", type=COUNT, default=3, help="timed conversions per setting, after one warm-up")
    b.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped checkpoints/default.pt)")
    b.add_argument("--json", default=None, help="also write all figures to this JSON file")
    b.set_defaults(func=_bench)

    v = sub.add_parser("evaluate", help="score conversions with offline judges (pip install -e \".[eval]\")",
                       description="Score the conversions listed in a TSV whose header names the columns converted, "
                       "source, target and optionally text, parallel, other, seconds (paths relative to the TSV's "
                       "folder). Judges: speaker similarity, ASR error rates, DNSMOS, MCD, pitch, real-time factor.")
    v.add_argument("list", help="TSV of conversions, one per line")
    v.add_argument("--json", default=None, help="per-row results and the summary (default: LIST with .json)")
    v.add_argument("--no-speaker", action="store_true", help="skip speaker similarity (resemblyzer)")
    v.add_argument("--asr", default="base", choices=("base", "tiny.en"),
                   help="the ASR judge: Whisper base (default; shares no weights with the converter's tiny.en "
                   "content features) or tiny.en")
    v.add_argument("--no-asr", action="store_true", help="skip the ASR error rates")
    v.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS quality")
    v.add_argument("--no-mcd", action="store_true", help="skip mel-cepstral distortion to the parallel clips")
    v.add_argument("--quiet", "-q", action="store_true", help="no line per row")
    v.set_defaults(func=_evaluate)

    _add_stream_and_live(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 an error (one line `error: ...`; VC_DEBUG=1 adds the traceback of an unexpected one),
    2 a bad option (argparse), 130 interrupted."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", VCWarning)
        warnings.showwarning = _show_warning  # restored when the block ends
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except VCError as e:
            print(f"error: {e}", file=sys.stderr)
        except OSError as e:  # the file-system errors that no layer below named: the path and the reason
            print(f"error: {describe(e)}", file=sys.stderr)
        except Exception as e:
            if os.environ.get("VC_DEBUG") == "1":
                traceback.print_exc()
            print(f"error: unexpected {type(e).__name__}: {reason(e)[:300]} (VC_DEBUG=1 shows where)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
