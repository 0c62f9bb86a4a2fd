#!/bin/sh
# ViLT entry point as in the authors' README (`cd ViLT; sh script/nlvr_run.sh`, also runnable from anywhere): the
# repository's script/nlvr_run.sh with MODEL=vilt set by this folder; every other variable as documented there.
set -eu
MODEL=vilt
export MODEL
exec sh "$(dirname "$0")/../../script/nlvr_run.sh" "$@"
