#!/bin/sh
# The APT authors' name of script/f30k_run.sh (DoubtedSteam/APT's README): the same script, same variables.
set -eu
exec sh "$(dirname "$0")/f30k_run.sh" "$@"
