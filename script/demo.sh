#!/usr/bin/env bash
# The main demo (README): on the synthetic demo world, pre-train a tiny ViLT (MODEL=meter: a tiny METER) with MLM+ITM,
# fine-tune it on the demo VQA with every tuning method from that checkpoint, and print one table
#   method | updated params | additional GFLOPs | VQA score | training time (s)
# also written as JSON and PNG. About 6-9 minutes on a 2-core CPU; fresh clones run script/setup.sh first.
# MODEL=clip: a tiny CLIP pre-trained on the shapes world's captions, every prompt-learning method on base-to-new
# 16-shot (python -m clip_apt.demo; table method | params | GFLOPs | base | new | H).
# Extra arguments go to `python -m shared_apt.experiments.demo` (e.g. --methods full,apt --no-progress --fresh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${MODEL:=vilt}"                                                   # vilt | meter
: "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"       # demo world, tokenizer, pre-training, results
: "${OUT:=}"                                                         # results folder (default $DEMO_CACHE/compare_$MODEL)

echo "[demo] set-up (bash script/setup.sh: creates/updates .venv only when needed)" >&2
bash "$ROOT/script/setup.sh"
case "$MODEL" in
  vilt|meter) ;;
  clip)
    cd "$ROOT"
    export PYTHONPATH="$ROOT/CLIP${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"
    CLIP_ARGS=(--cache "$DEMO_CACHE")
    [ -n "$OUT" ] && CLIP_ARGS+=(--out "$OUT")
    exec "$ROOT/.venv/bin/python" -m clip_apt.demo "${CLIP_ARGS[@]}" "$@" ;;
  *) echo "error: MODEL=$MODEL; expected vilt, meter or clip" >&2; exit 2 ;;
esac
ARGS=(--model "$MODEL" --cache "$DEMO_CACHE")
[ -n "$OUT" ] && ARGS+=(--out "$OUT")
cd "$ROOT"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"
exec "$ROOT/.venv/bin/python" -m shared_apt.experiments.demo "${ARGS[@]}" "$@"
