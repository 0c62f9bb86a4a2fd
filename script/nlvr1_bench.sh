#!/bin/sh
# NLVR (v1.0) benchmark of every tuning method on a tiny ViLT (MODEL=meter: tiny METER):
#   sh script/nlvr1_bench.sh TRAIN_SPLIT_DIR... --eval EVAL_SPLIT_DIR [options]
#   e.g. sh script/nlvr1_bench.sh ../shared/data/nlvr1/test --eval ../shared/data/nlvr1/hidden
# Writes arrows (NLVR1 writer), a generated NLVR-like world and a tokenizer into a cache, pre-trains with MLM+ITM on
# the world (cached), fine-tunes every method for 3 seeds (--seeds N), prints accuracy (mean ± std) on the evaluation
# split next to updated parameters and additional FLOPs; results JSON / PNG / table.md, per-seed JSON, checkpoints
# and tuned weights in the results folder. See the README's NLVR v1 section for the measured runtime.
# Options: see `python -m shared_apt.harness.experiments.nlvr1 --help` (--methods, --finetune-epochs, --image-index ...).
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${MODEL:=vilt}"                                                   # vilt | meter
: "${NLVR1_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"      # arrows, tokenizer, pre-training, results
if [ "$#" -lt 3 ]; then
  echo "usage: sh script/nlvr1_bench.sh TRAIN_SPLIT_DIR... --eval EVAL_SPLIT_DIR [options]" >&2; exit 2
fi
sh "$ROOT/script/setup.sh"
case "$MODEL" in
  vilt|meter) ;;
  *) echo "error: MODEL=$MODEL; expected vilt or meter" >&2; exit 2 ;;
esac
# split folders are given relative to the caller's directory: resolve them before changing directory (the list is
# rebuilt in place: `for` reads the original arguments once, each is shifted off and its resolved form appended)
for a in "$@"; do
  shift
  if [ -d "$a" ]; then set -- "$@" "$(cd "$a" && pwd)"; else set -- "$@" "$a"; fi
done
cd "$ROOT"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"
exec "$ROOT/.venv/bin/python" -m shared_apt.harness.experiments.nlvr1 --model "$MODEL" --cache "$NLVR1_CACHE" "$@"
