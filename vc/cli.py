"""The `vc` command: convert, train, export."""
from __future__ import annotations

import argparse
import sys

from .config import VOCODERS
from .errors import VCError


def _train(args: argparse.Namespace) -> int:
    from .config import load_recipe
    from .train import train

    cfg = load_recipe(args.recipe)
    if args.steps is not None:
        cfg.train.steps = args.steps
    try:
        train(cfg, args.data, args.out, dev=args.dev, max_minutes=args.max_minutes)
    except KeyboardInterrupt:
        return 130
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .api import load_model
    from .audio import save_wav

    model = load_model(args.checkpoint, vocoder=args.vocoder)
    speaker = model.embed(args.target)  # an unusable target stops the run before any work
    wav = model.convert(args.source, speaker)
    path = save_wav(args.output, wav, model.sample_rate)
    print(f"{args.source} -> {path} ({len(wav) / model.sample_rate:.2f} s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoint import build_model, export_inference, load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    net, cfg = build_model(ckpt, args.checkpoint)
    meta = dict(ckpt.get("meta", {}))
    if "step" in ckpt:
        meta["steps"] = ckpt["step"]
    path = export_inference(args.output, net, cfg, meta)
    print(f"{args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vc", description="One-shot voice conversion on a CPU.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="say what SOURCE says in the voice of --target")
    c.add_argument("source", help="the clip whose words are kept (wav, flac, ogg, mp3; any rate)")
    c.add_argument("--target", "-t", action="append", required=True,
                   help="a clip of the target voice; repeat for several (their embeddings are averaged)")
    c.add_argument("--output", "-o", required=True, help="output file (.wav or .flac)")
    c.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped checkpoints/default.pt)")
    c.add_argument("--vocoder", default="griffin-lim", choices=VOCODERS, help="mel-to-waveform stage")
    c.set_defaults(func=_convert)

    t = sub.add_parser("train", help="train a model (resumes from OUT/last.pt when present)")
    t.add_argument("recipe", help="recipe YAML overriding the config defaults (e.g. recipes/default.yaml)")
    t.add_argument("--data", required=True,
                   help="training split: a folder with utterances.tsv, or one folder per speaker")
    t.add_argument("--out", required=True, help="run folder: checkpoints, TensorBoard logs, exported model.pt")
    t.add_argument("--dev", default=None, help="validation split (default: a 'dev' folder beside --data, if any)")
    t.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    t.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this many minutes")
    t.set_defaults(func=_train)

    e = sub.add_parser("export", help="strip a training checkpoint to an inference checkpoint (weights and config)")
    e.add_argument("checkpoint", help="training checkpoint, e.g. runs/default/last.pt")
    e.add_argument("output", help="inference checkpoint to write, e.g. checkpoints/default.pt")
    e.set_defaults(func=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
