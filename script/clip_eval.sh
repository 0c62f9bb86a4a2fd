#!/bin/sh
# Evaluate the tuned weights of a CLIP run again (no training): the same protocol, data and seed as the run, the
# weights of CKPT (a run's tuned/ folder); the accuracies go to <run folder>/eval_results.json and match the run's
# results.json. Edit the variables below or set them in the environment, e.g.
#   CKPT=result/clip/base2new/oxford_pets/shots_16/clip_apt_seed1/tuned METHOD=apt DATASET=oxford_pets \
#     DATA_ROOT=/data/coop CLIP_PATH=ViT-B-16.pt sh script/clip_eval.sh
# CKPT empty: the tuned/ folder of the run the same variables name (script/clip_base2new.sh, clip_fewshot.sh or clip_xd.sh with them); with
# DATA_ROOT empty, the demo run of script/clip_base2new.sh (an error if it has not run yet: an evaluation never runs
# on untrained weights).
set -eu
: "${CKPT:=}"              # tuned-weights folder written by a run (<run folder>/tuned)
: "${LOAD_PATH:=$CKPT}"
: "${METHOD:=coop}"        # the method the weights were trained with
: "${PROTOCOL:=base2new}"  # base2new | fewshot | xd | dg | all: the run's protocol
: "${DATASET:=folder}"     # the run's dataset (xd/dg: its source)
: "${TARGETS:=}"           # xd/dg: the run's TARGETS
: "${SHOTS:=16}"
: "${SEED:=1}"
: "${DATA_ROOT:=}"         # as for the run; empty = demo
: "${CLIP_PATH:=}"         # OpenAI's ViT-B-16.pt
: "${LABEL:=}"             # the run's LABEL
: "${OUTPUT_DIR:=}"        # the run's OUTPUT_DIR
: "${EXTRA:=}"             # the run's EXTRA options (peft_options.*), if any
if [ -z "$DATA_ROOT" ] && [ -z "$TARGETS" ] && { [ "$PROTOCOL" = xd ] || [ "$PROTOCOL" = dg ]; }; then
  TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/script/_clip_common.sh"
if [ -z "$LOAD_PATH" ] && [ "$METHOD" != zeroshot ]; then
  LOAD_PATH="$RUN_DIR/tuned"
  if [ ! -d "$LOAD_PATH" ]; then
    case "$PROTOCOL" in xd|dg) _run=script/clip_xd.sh ;; all) _run="CLIP/run.py with protocol=all" ;;
      *) _run="script/clip_$PROTOCOL.sh" ;; esac
    echo "error: no tuned weights at $LOAD_PATH: run $_run with the same variables first (or set CKPT)" >&2
    exit 2
  fi
fi
set -- test_only=True
if [ -n "$LOAD_PATH" ]; then set -- "$@" "load_path=$LOAD_PATH"; fi
if [ -n "$TARGETS" ]; then
  _list=""
  for _t in $TARGETS; do _list="$_list${_list:+, }'$_t'"; done
  set -- "$@" "target_datasets=[$_list]"
fi
clip_launch "$@"
