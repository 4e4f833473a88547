"""`vc convert`: its options, and one path for one file or many (the planner of vc/batch.py, the runner of
vc/runner.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import VOCODERS
from .errors import VCError
from .options import JOBS, PITCH_SHIFT, SAMPLE_RATE, TIMBRE_MATCH


def add_convert(sub) -> None:
    c = sub.add_parser("convert", help="say what the inputs say in the voice of --target",
                       description="Convert one file (--output FILE.wav|.flac) or many (--output FOLDER): files, "
                       "folders (searched recursively) and glob patterns. An output already made from the same "
                       "source, targets, model and options is skipped, so a second run resumes; one made otherwise "
                       "is replaced only with --overwrite; an input, a target or the model is never replaced. A "
                       "folder's report has a row for every input.")
    c.add_argument("inputs", nargs="+", help="source clips, folders or glob patterns (wav, flac, ogg, mp3; any rate)")
    c.add_argument("--target", "-t", action="append", required=True,
                   help="a clip of the target voice, or a folder of one speaker's clips; repeat to average several")
    c.add_argument("--output", "-o", required=True, help="output file (one input) or folder (mirrors the input tree)")
    c.add_argument("--format", choices=("wav", "flac"), default=None,
                   help="output format (default wav; with an output file, its extension, which must agree)")
    c.add_argument("--sample-rate", type=SAMPLE_RATE, default=None, help="output sample rate (default: the model's)")
    c.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped checkpoints/default.pt)")
    c.add_argument("--vocoder", default=None, choices=VOCODERS,
                   help="mel-to-waveform stage (default: the checkpoint's neural vocoder, else griffin-lim)")
    c.add_argument("--pitch-shift", type=PITCH_SHIFT, default=0.0, metavar="SEMITONES",
                   help="move the output pitch by this many semitones (after matching the target's register)")
    c.add_argument("--no-match-pitch", action="store_true",
                   help="keep the source's pitch register instead of moving it to the target's")
    c.add_argument("--timbre-match", type=TIMBRE_MATCH, default=None, metavar="0..1",
                   help="how far to move the output's average spectrum to the target's (default: the model's)")
    c.add_argument("--dereverb", action="store_true",
                   help="remove the sources' room echo before converting (a distant microphone in a reverberant "
                   "room; costs about as much time as the conversion)")
    c.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    c.add_argument("--jobs", "-j", type=JOBS, default=1, help="parallel worker processes (they share the cores)")
    c.add_argument("--overwrite", action="store_true",
                   help="convert again where the output exists (never replaces an input, a target or the model)")
    c.add_argument("--dry-run", action="store_true",
                   help="list what would be converted; write nothing (but --report when given)")
    c.add_argument("--shard", default=None, metavar="I/N",
                   help="convert only shard I of N (1-based), a stable split for N machines")
    c.add_argument("--report", default=None,
                   help="report CSV (default: OUTPUT/vc-report.csv for a folder, none for a file)")
    c.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar, no line per file (errors, warnings and the batch summary remain)")
    c.set_defaults(func=convert)


def convert(args: argparse.Namespace) -> int:
    """One file (--output FILE.wav|.flac) or many (--output FOLDER): one planner, one runner, the same options."""
    from .batch import output_kind, parse_shard, plan, plan_single, shard
    from .runner import run

    inputs, output = args.inputs, Path(args.output)
    single = output_kind(output) == "file"
    if single:
        if len(inputs) != 1:
            raise VCError(f"{output}: {len(inputs)} inputs need a folder as --output, not a file")
        jobs, out_dir, default_report = plan_single(inputs[0], output, args.format), output.parent, None
    else:
        jobs, out_dir = plan(inputs, output, args.format or "wav"), output
        default_report = None if args.dry_run else output / "vc-report.csv"  # a dry run writes nothing unasked
    if not jobs:
        raise VCError(f"no audio files found in: {' '.join(inputs)}")
    if args.shard:
        index, count = parse_shard(args.shard)
        jobs = shard(jobs, index, count)
        if default_report:
            default_report = output / f"vc-report-shard-{index}-of-{count}.csv"
    summary = run(jobs, args.target, out_dir, checkpoint=args.checkpoint, vocoder=args.vocoder, device=args.device,
                  workers=args.jobs, sample_rate=args.sample_rate, overwrite=args.overwrite, dry_run=args.dry_run,
                  pitch_shift=args.pitch_shift, match_pitch=not args.no_match_pitch, timbre_match=args.timbre_match,
                  dereverb=args.dereverb, report=Path(args.report) if args.report else default_report,
                  progress=not args.quiet and not single, echo=not single)
    if single:
        return _single_result(jobs[0], summary, args.dry_run, args.quiet)
    if summary.stopped:
        print(f"error: stopped early: {summary.stopped}", file=sys.stderr)
    print(("done: " if not summary.failed else "done with failures: ") + summary.line())
    return 1 if summary.failed or summary.stopped else 0


def _single_result(job, summary, dry_run: bool, quiet: bool) -> int:
    for line in summary.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if summary.errors:
        print(f"error: {summary.errors[0]}", file=sys.stderr)
        return 1
    if summary.skipped:
        print(f"{job.output}: already done (same source, targets, model and options); --overwrite converts it again")
    elif not dry_run and not quiet:
        print(f"{job.source} -> {job.output} ({summary.audio_seconds:.2f} s)")
    return 0
