#!/bin/sh
# Fine-tune Flickr30K image-text retrieval with a tuning method (upstream TRAIN.md command line + the method's named config).
# Edit the variables below or set them in the environment, e.g. METHOD=lora DATA_ROOT=/data/arrows sh script/F30K_run.sh
# With DATA_ROOT empty it trains a tiny model for a few steps on the generated demo world (works on a fresh machine).
set -eu
: "${MODEL:=vilt}"                 # vilt | meter
: "${METHOD:=apt}"                 # full classifier shallow_prompt deep_prompt lora adapter scaled_pa apt
: "${DATA_ROOT:=}"                 # folder with the upstream .arrow files; empty = demo world
: "${LOAD_PATH:=}"                 # pre-trained weights (ViLT: vilt_200k_mlm_itm.ckpt)
: "${NUM_GPUS:=1}"
: "${NUM_NODES:=1}"
: "${PER_GPU_BATCHSIZE:=4}"
: "${EXTRA:=}"                     # more Sacred key=value arguments, e.g. "learning_rate=1e-4 seed=1"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_common.sh"
launch f30k train
