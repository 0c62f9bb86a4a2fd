#!/usr/bin/env bash
# Evaluate a fine-tuned checkpoint on VQAv2 (upstream EVAL.md: test_only=True precision=32 load_path=<ckpt>).
# Edit the variables below or set them in the environment, e.g. CKPT=result/.../last.ckpt script/vqa_eval.sh
# With DATA_ROOT empty it evaluates on the demo world: CKPT defaults to the newest checkpoint of script/vqa_run.sh
# in demo mode (or, if there is none yet, the randomly initialised tiny model).
set -euo pipefail
: "${MODEL:=vilt}"                 # vilt | meter
: "${METHOD:=apt}"                 # the method the checkpoint was trained with
: "${DATA_ROOT:=}"                 # folder with the upstream .arrow files; empty = demo world
: "${CKPT:=}"                      # fine-tuned checkpoint to evaluate (Lightning .ckpt)
: "${LOAD_PATH:=$CKPT}"
: "${NUM_GPUS:=1}"
: "${NUM_NODES:=1}"
: "${PER_GPU_BATCHSIZE:=32}"
: "${EXTRA:=}"

source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [ "$DEMO" = 1 ] && [ -z "$LOAD_PATH" ]; then
  LOAD_PATH="$(last_checkpoint finetune_vqa)"
  [ -z "$LOAD_PATH" ] && echo "no demo checkpoint of finetune_vqa yet: evaluating the randomly initialised model" >&2
fi
if [ "$DEMO" = 0 ] && [ -z "$LOAD_PATH" ]; then
  echo "error: set CKPT (or LOAD_PATH) to the checkpoint to evaluate" >&2; exit 2
fi
[ -n "$LOAD_PATH" ] && ARGS+=("load_path=$LOAD_PATH")
[ "$DEMO" = 1 ] && [ "vqa" = f30k ] && ARGS+=("draw_false_text=3")
launch vqa eval test_only=True precision=32
