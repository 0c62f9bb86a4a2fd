#!/bin/sh
# Sample the DreamBooth prompts with tuned weights (N seeded images per prompt, grid.png, samples.json).
#   WEIGHTS=runs/sd_dreambooth_apt/weights MODEL_DIR=/models/sd15 CLASS_NOUN=dog sh script/sd_sample.sh
# With MODEL_DIR empty: the tiny demo model (as script/sd_dreambooth.sh without MODEL_DIR).
set -eu
: "${WEIGHTS:=runs/sd_dreambooth_apt/weights}"   # tuned weights folder ("" = the untuned model)
: "${MODEL_DIR:=}"
: "${CLASS_NOUN:=dog}"
: "${IDENTIFIER:=sks}"
: "${OUT:=${WEIGHTS:-runs/sd_untuned}/../samples}"
: "${NUM_IMAGES:=4}"
: "${SEED:=0}"
: "${STEPS:=50}"
: "${GUIDANCE:=7.5}"
: "${RESOLUTION:=512}"
: "${PROMPTS_FILE:=}"              # one prompt per line ({identifier} / {class_noun} substituted); "" = DreamBooth's
: "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo/sd}"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/script/_python.sh"
package_path StableDiffusion
if [ -z "$MODEL_DIR" ]; then
  eval "$("$PY" -m sd_apt.demo --cache "$DEMO_CACHE" --prepare)"
  MODEL_DIR=$DEMO_MODEL_DIR; CLASS_NOUN=$DEMO_CLASS_NOUN; IDENTIFIER=$DEMO_IDENTIFIER; RESOLUTION=$DEMO_RESOLUTION
  case "$STEPS" in 50) STEPS=20 ;; esac
  case "$GUIDANCE" in 7.5) GUIDANCE=3.0 ;; esac
fi
set -- --model-dir "$MODEL_DIR" --weights "$WEIGHTS" --class-noun "$CLASS_NOUN" --identifier "$IDENTIFIER" \
  --num-images "$NUM_IMAGES" --seed "$SEED" --steps "$STEPS" --guidance "$GUIDANCE" --resolution "$RESOLUTION" \
  --out "$OUT"
[ -n "$PROMPTS_FILE" ] && set -- "$@" --prompts-file "$PROMPTS_FILE"
exec "$PY" -m sd_apt.sample "$@"
