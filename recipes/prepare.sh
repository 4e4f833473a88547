#!/usr/bin/env bash
# Prepare a corpus for `vc train` and `vc adapt`: download, extract, check every clip, write OUT/utterances.tsv.
#
#   recipes/prepare.sh LAYOUT SOURCE OUT [vc prepare options]
#
# LAYOUT: folder | vctk | libritts | librispeech (see recipes/README.md).
# SOURCE: a folder, an archive (.tar.gz, .tar, .zip, ...), a URL of one, or the name of a known corpus:
#   vctk                         VCTK 0.92, 110 speakers, 44 h (11 GB zip)
#   libritts-dev-clean           LibriTTS dev-clean, 40 speakers, 9 h (1.2 GB)
#   libritts-train-clean-100     LibriTTS train-clean-100, 247 speakers, 54 h (7.7 GB)
#   librispeech-dev-clean        LibriSpeech dev-clean, 40 speakers, 5 h (0.3 GB)
#   librispeech-train-clean-100  LibriSpeech train-clean-100, 251 speakers, 100 h (6.3 GB)
# Downloads resume when interrupted; a finished download or extraction is reused by a second run.
# PYTHON picks the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
source "$(dirname "$0")/common.sh"
need 3 "$@"
layout=$1 source=$2 out=$3
shift 3
case "$source" in
  vctk) source=https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip ;;
  libritts-dev-clean) source=https://www.openslr.org/resources/60/dev-clean.tar.gz ;;
  libritts-train-clean-100) source=https://www.openslr.org/resources/60/train-clean-100.tar.gz ;;
  librispeech-dev-clean) source=https://www.openslr.org/resources/12/dev-clean.tar.gz ;;
  librispeech-train-clean-100) source=https://www.openslr.org/resources/12/train-clean-100.tar.gz ;;
esac
exec "$PYTHON" -m vc prepare "$layout" "$source" --out "$out" "$@"
