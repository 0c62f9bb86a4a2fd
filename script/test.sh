#!/usr/bin/env bash
# The test command of the README (and of CI): set up if needed, then run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
export PYTHONWARNINGS="ignore::UserWarning:sacred.dependencies"
exec .venv/bin/python -m pytest tests -p no:cacheprovider "$@"
