#!/bin/sh
# Evaluate a fine-tuned checkpoint on Flickr30K image-text retrieval (upstream EVAL.md: test_only=True precision=32 load_path=<ckpt>).
# Edit the variables below or set them in the environment, e.g. CKPT=result/.../last.ckpt sh script/F30K_eval.sh
# With DATA_ROOT empty it evaluates on the demo world: CKPT defaults to the newest checkpoint of script/F30K_run.sh
# in demo mode (an error if there is none yet: an evaluation never runs on randomly initialised weights).
set -eu
: "${MODEL:=vilt}"                 # vilt | meter
: "${METHOD:=apt}"                 # the method the checkpoint was trained with
: "${DATA_ROOT:=}"                 # folder with the upstream .arrow files; empty = demo world
: "${CKPT:=}"                      # fine-tuned checkpoint to evaluate (Lightning .ckpt)
: "${LOAD_PATH:=$CKPT}"
: "${NUM_GPUS:=1}"
: "${NUM_NODES:=1}"
: "${PER_GPU_BATCHSIZE:=4}"
: "${EXTRA:=}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_common.sh"
launch f30k eval
