#!/usr/bin/env bash
# Adapt the shipped converter to new speakers (1 to 3 minutes of speech each): prepare, adapt, try it.
#
#   recipes/adapt.sh LAYOUT SOURCE OUT.pt [vc adapt options, e.g. --minutes 10 --parts speaker,adain,pitch]
#
# LAYOUT and SOURCE as for recipes/prepare.sh (e.g. `folder my-voices/` with one sub-folder of clips per speaker).
# The prepared data goes to OUT.data/, the adaptation's work files (resume, TensorBoard) to OUT.adapt/.
# CHECKPOINT picks the model to start from (default: checkpoints/default.pt); PYTHON the interpreter.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need 3 "$@"
layout=$1 source=$2 out=$3
shift 3
data=${out%.pt}.data

echo "== prepare"
"$here/recipes/prepare.sh" "$layout" "$source" "$data" --min-speaker-seconds "${MIN_SPEAKER_SECONDS:-30}"
echo "== adapt"
"$PYTHON" -m vc adapt "${CHECKPOINT:-$here/checkpoints/default.pt}" --data "$data" --out "$out" "$@"
echo "done: vc convert SOURCE --target CLIP_OF_A_NEW_SPEAKER --output OUT.wav --checkpoint $out"
