#!/bin/sh
# METER entry point as in the authors' README (`cd METER; sh script/vqa_eval.sh`, also runnable from anywhere): the
# repository's script/vqa_eval.sh with MODEL=meter set by this folder; every other variable as documented there.
set -eu
MODEL=meter
export MODEL
exec sh "$(dirname "$0")/../../script/vqa_eval.sh" "$@"
