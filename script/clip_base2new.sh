#!/bin/sh
# CLIP base-to-new (CoCoOp protocol, APT Table 4): K-shot subsets of every class per seed, train on the base half of
# the classes, test on the base and on the new half; base / new / H in <run folder>/results.json.
# Edit the variables below or set them in the environment, e.g.
#   METHOD=apt DATASET=oxford_pets DATA_ROOT=/data/coop CLIP_PATH=ViT-B-16.pt SEED=1 sh script/clip_base2new.sh
# With DATA_ROOT empty it trains the demo's tiny CLIP on the shapes world for a few epochs (works on a fresh machine).
set -eu
: "${METHOD:=coop}"        # zeroshot coop cocoop vpt_shallow vpt_deep upt upt_deep joint shared_prompt mlp_prompt apt lora adapter
: "${DATASET:=folder}"     # CoOp key (imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101) or folder
: "${SHOTS:=16}"
: "${SEED:=1}"
: "${DATA_ROOT:=}"         # CoOp's $DATA (holds oxford_pets/, ...); DATASET=folder: the split_zhou folder; empty = demo
: "${CLIP_PATH:=}"         # OpenAI's ViT-B-16.pt
: "${LABEL:=}"             # method_label of the results (tells option variants apart, e.g. "upt (token mixing)")
: "${OUTPUT_DIR:=}"        # runs go to OUTPUT_DIR/base2new/<dataset>/shots_<K>/; empty = result/clip (demo: the cache)
: "${EXTRA:=}"             # more Sacred key=value arguments, e.g. "peft_options.token_mixing=True precision=32"
PROTOCOL=base2new

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_clip_common.sh"
clip_launch
