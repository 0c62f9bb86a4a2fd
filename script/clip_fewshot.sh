#!/bin/sh
# CLIP few-shot classification (CoOp protocol, UPT Table 2 / Fig. 4): K shots of every class per seed, test on every
# class; accuracy in <run folder>/results.json. CoOp's epochs per shot count (1: 50, 2-4: 100, 8-16: 200, ImageNet
# 50) for the methods on its recipe; CoOp itself with 16 random context tokens (peft_coop_fewshot).
# Edit the variables below or set them in the environment, e.g.
#   METHOD=upt DATASET=eurosat SHOTS=4 SEED=2 DATA_ROOT=/data/coop CLIP_PATH=ViT-B-16.pt sh script/clip_fewshot.sh
# With DATA_ROOT empty it trains the demo's tiny CLIP on the shapes world for a few epochs.
set -eu
: "${METHOD:=coop}"        # zeroshot coop cocoop vpt_shallow vpt_deep upt upt_deep joint shared_prompt mlp_prompt apt lora adapter
: "${DATASET:=folder}"     # CoOp key (imagenet caltech101 oxford_pets ... ucf101) or folder
: "${SHOTS:=16}"           # 1 2 4 8 16
: "${SEED:=1}"
: "${DATA_ROOT:=}"         # CoOp's $DATA; DATASET=folder: the split_zhou folder; empty = demo
: "${CLIP_PATH:=}"         # OpenAI's ViT-B-16.pt
: "${LABEL:=}"             # method_label of the results
: "${OUTPUT_DIR:=}"        # runs go to OUTPUT_DIR/fewshot/<dataset>/shots_<K>/; empty = result/clip (demo: the cache)
: "${EXTRA:=}"             # more Sacred key=value arguments
PROTOCOL=fewshot

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_clip_common.sh"
clip_launch
