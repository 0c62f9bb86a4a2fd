#!/bin/sh
# The test command of the README (and of CI): set up if needed, then run the whole test suite on the CPU.
set -eu
cd "$(dirname "$0")/.."
sh script/setup.sh
export PYTHONWARNINGS="ignore::UserWarning:sacred.dependencies"
exec .venv/bin/python -m pytest tests -p no:cacheprovider "$@"
