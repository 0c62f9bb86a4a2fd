#!/bin/sh
# ViLT entry point as in the authors' README (`cd ViLT; sh script/f30k_eval.sh`, also runnable from anywhere): the
# repository's script/f30k_eval.sh with MODEL=vilt set by this folder; every other variable as documented there.
set -eu
MODEL=vilt
export MODEL
exec sh "$(dirname "$0")/../../script/f30k_eval.sh" "$@"
