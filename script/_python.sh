# Sourced (with `.`, not run) by the scripts in script/. POSIX sh. Expects ROOT (the repository root).
# PY: the project's .venv python when set up (sh script/setup.sh), else $PYTHON or python3.
# package_path DIR...: puts ROOT and ROOT/DIR... (package folders such as CLIP, StableDiffusion) first on the
# exported PYTHONPATH, so the scripts run this checkout's code.

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python3}"; fi

package_path() {
  _path="$ROOT"
  for _dir in "$@"; do _path="$_path:$ROOT/$_dir"; done
  export PYTHONPATH="$_path${PYTHONPATH:+:$PYTHONPATH}"
}
