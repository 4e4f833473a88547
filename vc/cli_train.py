"""The training commands: `vc train`, `vc prepare`, `vc adapt` and `vc train-vocoder`, their options and what each
runs (the training code is imported only when a command runs)."""
from __future__ import annotations

import argparse

from .config import LAYOUTS, PARTS, AdaptConfig, load_recipe
from .options import COUNT, JOBS, LEARNING_RATE, NON_NEGATIVE, POSITIVE, RATIO, STEP, STEPS, THREADS


def add_train(sub) -> None:
    """`vc train` and its options."""
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
    t.add_argument("--init", default=None, help="fine-tune: a fresh run starts from this exported model's weights "
                   "and architecture (e.g. checkpoints/default.pt) with the recipe's training settings")
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .training.converter import train

    cfg = load_recipe(args.recipe)
    if args.steps is not None:
        cfg = cfg.replace(train={"steps": args.steps})
    if args.whisper_weights is not None:
        cfg = cfg.replace(train={"whisper_weights": args.whisper_weights})
    try:
        train(cfg, args.data, args.out, dev=args.dev, max_minutes=args.max_minutes, until=args.until,
              device=args.device, init=args.init)
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


def add_prepare_and_adapt(sub) -> None:
    """`vc prepare` and `vc adapt` and their options."""
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
        recipe = load_recipe(args.recipe) if args.recipe else None
        train_vocoder(args.data, args.out, cfg=_vocoder_settings(args), init=args.init, causal=args.causal or None,
                      finetune_on=args.finetune_on, max_minutes=args.max_minutes,
                      audio=recipe.audio if recipe else None, model_cfg=recipe.vocoder if recipe else None)
    except KeyboardInterrupt:  # saved; the loop said how to resume
        return 130
    return 0


def add_train_vocoder(sub) -> None:
    """`vc train-vocoder` and its options."""
    w = sub.add_parser("train-vocoder", help="train the neural vocoder (resumes from OUT/vocoder-last.pt)",
                       description="Train the Vocos-style vocoder on the audio of --data; with --finetune-on, "
                       "continue from --init on that converter's own reconstructions. Writes OUT/vocoder.pt; bundle "
                       "it into a converter with `vc export --vocoder-ckpt`.")
    w.add_argument("--data", required=True, help="audio: a folder with utterances.tsv, or one folder per speaker")
    w.add_argument("--out", required=True, help="run folder")
    w.add_argument("--steps", type=STEPS, default=None, help="training steps (default 12000)")
    w.add_argument("--recipe", default=None, help="a recipe whose audio and vocoder sections to use (e.g. "
                   "recipes/stream10.yaml; default: the defaults)")
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


def _train_whisper(args: argparse.Namespace) -> int:
    from .config import WhisperTuneConfig
    from .training.whisper_tune import train_whisper

    cfg = WhisperTuneConfig(threads=args.threads)
    for name in ("steps", "lr", "batch_size"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    try:
        train_whisper(args.checkpoint, args.data, args.out, cfg, run=args.run, max_minutes=args.max_minutes)
    except KeyboardInterrupt:  # saved; the loop said how to resume
        return 130
    return 0


def add_train_whisper(sub) -> None:
    """`vc train-whisper` and its options."""
    from .config import WhisperTuneConfig

    d = WhisperTuneConfig()
    w = sub.add_parser("train-whisper", help="fine-tune a model's Whisper encoder to hear through rooms and noise",
                       description="Fine-tune the Whisper encoder of CHECKPOINT (a model with whisper content "
                       "features) so that noisy, reverberant copies of the clips of --data give the states its "
                       "frozen original gives the clean clips; the converter, speaker encoder and vocoder stay as "
                       "they are. Exports --out; resumes when run again.")
    w.add_argument("checkpoint", help="exported model to start from, e.g. checkpoints/default.pt")
    w.add_argument("--data", required=True, nargs="+",
                   help="clean speech: folders with utterances.tsv, or one folder per speaker (several are pooled)")
    w.add_argument("--out", required=True, help="the fine-tuned model to write, e.g. runs/hearing.pt")
    w.add_argument("--steps", type=STEPS, default=None, help=f"training steps (default {d.steps})")
    w.add_argument("--lr", type=LEARNING_RATE, default=None, help=f"peak learning rate (default {d.lr})")
    w.add_argument("--batch-size", type=COUNT, default=None,
                   help=f"segments of {d.segment_seconds:g} s per step (default {d.batch_size})")
    w.add_argument("--run", default=None, help="work folder: last.pt, log.jsonl, TensorBoard (default OUT.whisper)")
    w.add_argument("--threads", type=THREADS, default=0, help="torch threads (0: torch's default)")
    w.add_argument("--max-minutes", type=POSITIVE, default=None, help="stop (and checkpoint) after this many minutes")
    w.set_defaults(func=_train_whisper)
