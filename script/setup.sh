#!/bin/sh
# Idempotent set-up: creates .venv and installs requirements + this project (editable). Re-runs the install only
# when requirements.txt or pyproject.toml changed since the last successful run.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.apt-setup-stamp
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import shared_apt, vilt, meter, clip_apt, sd_apt" 2>/dev/null; then
  exit 0
fi
echo "[setup] installing requirements (torch/torchvision come from the local disk where available)"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "$want" > "$stamp"
echo "[setup] done"
