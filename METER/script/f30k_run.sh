#!/bin/sh
# METER entry point as in the authors' README (`cd METER; sh script/f30k_run.sh`, also runnable from anywhere): the
# repository's script/f30k_run.sh with MODEL=meter set by this folder; every other variable as documented there.
set -eu
MODEL=meter
export MODEL
exec sh "$(dirname "$0")/../../script/f30k_run.sh" "$@"
