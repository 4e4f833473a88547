#!/usr/bin/env bash
# Train a converter from scratch on a corpus: prepare, train, export (with the shipped vocoder), evaluate.
#
#   recipes/train.sh LAYOUT SOURCE RUN [RECIPE]
#
# LAYOUT and SOURCE as for recipes/prepare.sh; RUN is the run folder (RUN/data holds the prepared corpus);
# RECIPE defaults to recipes/default.yaml. Running it again resumes training from RUN/last.pt.
# Environment:
#   NPROC=4     train on 4 processes with torchrun (one per GPU where there are GPUs, else gloo on the CPU)
#   DEV=folder  dev split (utterances.tsv) for validation and the evaluation (default: ../shared/data/dev if present)
#   STEPS=n     override the recipe's number of steps
#   MIN_SPEAKER_SECONDS=s  the data checker's minimum speech per speaker (default 30)
#   PYTHON      the interpreter (default: the repository's .venv, else python3)
set -euo pipefail
source "$(dirname "$0")/common.sh"
need 3 "$@"
layout=$1 source=$2 run=$3 recipe=${4:-$here/recipes/default.yaml}
dev=${DEV:-$here/../shared/data/dev}
nproc=${NPROC:-1}

echo "== prepare"
"$here/recipes/prepare.sh" "$layout" "$source" "$run/data" --min-speaker-seconds "${MIN_SPEAKER_SECONDS:-30}"

echo "== train"
args=(train "$recipe" --data "$run/data" --out "$run")
[ -f "$dev/utterances.tsv" ] && args+=(--dev "$dev")
[ -n "${STEPS:-}" ] && args+=(--steps "$STEPS")
if [ "$nproc" -gt 1 ]; then
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m vc "${args[@]}"
else
  "$PYTHON" -m vc "${args[@]}"
fi

echo "== export"
"$PYTHON" -m vc export "$run/last.pt" "$run/converter.pt" --vocoder-ckpt "$here/checkpoints/default.pt"

echo "== evaluate"
if [ -f "$dev/utterances.tsv" ]; then
  (cd "$here" && "$PYTHON" benchmarks/evaluate_dev.py --checkpoint "$run/converter.pt" --data "$dev" \
     --systems source,model --pairs 40 --out "$run/eval")
else
  echo "no dev split at $dev: set DEV=folder to evaluate one-shot conversions between its speakers"
fi
echo "done: convert with  vc convert SOURCE --target TARGET --output OUT.wav --checkpoint $run/converter.pt"
