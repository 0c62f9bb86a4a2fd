#!/bin/sh
# CLIP transfer from one training set to others with the same learned weights (classifier over each target's own
# class list): PROTOCOL=xd (cross-dataset: ImageNet -> the other ten CoOp datasets) or PROTOCOL=dg (domain
# generalisation, UPT Table 1: ImageNet 16-shot -> ImageNet-V2 / -Sketch / -A / -R; A and R: their 200 classes).
# Source and target accuracies in <run folder>/results.json (acc, target_accs).
# Edit the variables below or set them in the environment, e.g.
#   METHOD=upt PROTOCOL=dg DATA_ROOT=/data/coop CLIP_PATH=ViT-B-16.pt SEED=1 sh script/clip_xd.sh
# With DATA_ROOT empty it runs on the demo: the shapes world in ImageNet's layout and four variant copies (class
# subsets for "A" and "R"); TARGETS then defaults to those four.
set -eu
: "${METHOD:=coop}"        # zeroshot coop cocoop vpt_shallow vpt_deep upt upt_deep joint shared_prompt mlp_prompt apt lora adapter
: "${PROTOCOL:=xd}"        # xd | dg
: "${DATASET:=imagenet}"   # the source (a CoOp key; dg: imagenet)
: "${TARGETS:=}"           # space-separated target keys; empty = the protocol's (xd: the other ten, dg: the variants)
: "${SHOTS:=16}"
: "${SEED:=1}"
: "${DATA_ROOT:=}"         # CoOp's $DATA (imagenet/, imagenetv2/, ..., oxford_pets/, ...); empty = demo
: "${CLIP_PATH:=}"         # OpenAI's ViT-B-16.pt
: "${LABEL:=}"             # method_label of the results
: "${OUTPUT_DIR:=}"        # runs go to OUTPUT_DIR/<protocol>/<source>/shots_<K>/; empty = result/clip (demo: cache)
: "${EXTRA:=}"             # more Sacred key=value arguments
case "$PROTOCOL" in xd|dg) ;; *) echo "error: PROTOCOL=$PROTOCOL; clip_xd.sh runs xd or dg" >&2; exit 2 ;; esac
if [ -z "$DATA_ROOT" ] && [ -z "$TARGETS" ]; then TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"; fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_clip_common.sh"
set --
if [ -n "$TARGETS" ]; then
  _list=""
  for _t in $TARGETS; do _list="$_list${_list:+, }'$_t'"; done
  set -- "target_datasets=[$_list]"
fi
clip_launch "$@"
