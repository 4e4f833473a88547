"""The `vc` command: convert, stream, live, prepare, train, adapt, train-vocoder, export, evaluate, bench."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__
from .config import VOCODERS
from .convert_cli import add_convert
from .errors import VCError, VCWarning, reason
from .files import describe, write_text
from .options import BLOCK_MS, COUNT, PITCH_SHIFT, POSITIVE, TIMBRE_MATCH, threads_list
from .cli_train import add_prepare_and_adapt, add_train, add_train_vocoder, add_train_whisper


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
        q.add_argument("--block-ms", type=BLOCK_MS, default=20.0,
                       help="block length in ms, rounded to whole frames of the model (10 ms for stream.pt, whose "
                       "latency is the block + 30 ms: 50 ms by default, 40 ms with --block-ms 10)")
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


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="vc", description="One-shot voice conversion on a CPU.")
    p.add_argument("--version", action="version", version=f"vc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    add_convert(sub)

    add_train(sub)
    add_prepare_and_adapt(sub)

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
    add_train_whisper(sub)

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
