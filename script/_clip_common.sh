# Shared by script/clip_*.sh (sourced with `.`, not run). POSIX sh (dash, bash, ...). Expects ROOT (the repository
# root), METHOD, DATASET, SHOTS, SEED, DATA_ROOT, CLIP_PATH, LABEL, OUTPUT_DIR, EXTRA and PROTOCOL to be set by the
# calling script.
#
# With DATA_ROOT empty the CLIP demo is used: the shapes world and the tiny CLIP pre-trained on its captions from
# DEMO_CACHE/clip (the files of `MODEL=clip sh script/demo.sh`, built if absent), the world also written in CoOp's
# ImageNet layouts for xd/dg, DEMO_EPOCHS epochs (about a minute per script on a 2-core CPU).

. "$ROOT/script/_python.sh"
package_path CLIP
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"

case "$METHOD" in
  zeroshot|coop|cocoop|vpt_shallow|vpt_deep|upt|upt_deep|joint|shared_prompt|mlp_prompt|apt|lora|adapter) ;;
  *) echo "error: METHOD=$METHOD; expected one of zeroshot coop cocoop vpt_shallow vpt_deep upt upt_deep joint shared_prompt mlp_prompt apt lora adapter" >&2; exit 2 ;;
esac
case "$PROTOCOL" in
  base2new|fewshot|xd|dg|all) ;;
  *) echo "error: PROTOCOL=$PROTOCOL; expected base2new, fewshot, xd, dg or all" >&2; exit 2 ;;
esac
case "$SHOTS" in
  ''|*[!0-9]*) echo "error: SHOTS=$SHOTS; expected a number of shots per class (1 2 4 8 16)" >&2; exit 2 ;;
esac

DEMO=0
if [ -z "$DATA_ROOT" ]; then
  DEMO=1
  : "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"
  : "${DEMO_EPOCHS:=5}"
  echo "DATA_ROOT is empty: the CLIP demo (shapes world and tiny CLIP in $DEMO_CACHE/clip, $DEMO_EPOCHS epochs)" >&2
  DEMO_VARS="$("$PY" -m clip_apt.script_demo --cache "$DEMO_CACHE")" || {
    echo "error: could not prepare the CLIP demo in $DEMO_CACHE" >&2; exit 1; }
  eval "$DEMO_VARS"   # shell-quoted assignments (shlex.quote) of DEMO_WORLD, DEMO_COOP_ROOT, DEMO_CLIP_PATH, ...
  case "$DATASET" in
    folder) DATA_ROOT="$DEMO_WORLD" ;;
    imagenet) DATA_ROOT="$DEMO_COOP_ROOT" ;;
    *) echo "error: DATASET=$DATASET with DATA_ROOT empty; the demo has DATASET=folder (the shapes world) and DATASET=imagenet (the world in ImageNet's layout, with the four variants)" >&2; exit 2 ;;
  esac
  CLIP_PATH="$DEMO_CLIP_PATH"
  : "${OUTPUT_DIR:=$DEMO_CACHE/clip/script_runs}"
fi
: "${OUTPUT_DIR:=result/clip}"
if [ -z "$CLIP_PATH" ]; then
  echo "error: set CLIP_PATH to OpenAI's ViT-B-16.pt (or any OpenAI-format CLIP file)" >&2; exit 2
fi

# The run folder: OUTPUT_DIR/<protocol>/<dataset>/shots_<K>/<tag>_<method>_seed<S> (tag: LABEL with every character
# other than letters, digits, '.', '_', '-' replaced by '_'; "clip" without a label).
if [ "$DATASET" = folder ]; then DATASET_NAME="$(basename "$DATA_ROOT")"; else DATASET_NAME="$DATASET"; fi
if [ -n "$LABEL" ]; then TAG="$(printf '%s' "$LABEL" | tr -c 'A-Za-z0-9._-' '_')"; else TAG=clip; fi
RUN_ROOT="$OUTPUT_DIR/$PROTOCOL/$DATASET_NAME/shots_$SHOTS"
RUN_DIR="$RUN_ROOT/${TAG}_${METHOD}_seed$SEED"

# named_config: the method's named config of CLIP/run.py (CoOp few-shot: 16 random context tokens)
named_config() {
  if [ "$PROTOCOL" = fewshot ] && [ "$METHOD" = coop ]; then echo peft_coop_fewshot; else echo "peft_$METHOD"; fi
}

# recipe_epochs: the paper epochs where they depend on the dataset or the shots (CoOp's few-shot schedule 1 shot 50,
# 2-4 shots 100, 8-16 shots 200, ImageNet 50; base-to-new ImageNet 50) for the methods trained on CoOp's 200-epoch
# recipe; empty = the named config's epochs (CoCoOp and APT: 10).
recipe_epochs() {
  case "$METHOD" in coop|vpt_shallow|vpt_deep|upt|upt_deep|joint|shared_prompt|mlp_prompt) ;; *) return 0 ;; esac
  if [ "$DATASET" = imagenet ]; then echo 50; return 0; fi
  if [ "$PROTOCOL" = fewshot ]; then
    case "$SHOTS" in 1) echo 50 ;; 2|4) echo 100 ;; *) echo 200 ;; esac
  fi
}

# clip_launch [key=value ...]: CLIP/run.py with the method's named config, the protocol, the data, the run folder,
# the demo's small settings (DATA_ROOT empty), the caller's keys, then EXTRA. Arguments are built in the positional
# parameters (POSIX sh has no arrays), so values with spaces stay one argument each.
clip_launch() {
  set -- "$(named_config)" "protocol=$PROTOCOL" "dataset=$DATASET" "data_root=$DATA_ROOT" "clip_path=$CLIP_PATH" \
    "seed=$SEED" "num_shots=$SHOTS" "output_dir=$RUN_ROOT" "exp_name=$TAG" "$@"
  if [ -n "$LABEL" ]; then set -- "$@" "method_label=$LABEL"; fi
  if [ "$DEMO" = 1 ]; then
    set -- "$@" "text_heads=$DEMO_TEXT_HEADS" "vision_heads=$DEMO_VISION_HEADS" "image_size=$DEMO_IMAGE_SIZE" \
      crop_min_scale=0.9 flip=False batch_size=16 "max_epochs=$DEMO_EPOCHS" num_workers=0
    if [ "$METHOD" = cocoop ]; then set -- "$@" batch_size=4; fi
  else
    _epochs="$(recipe_epochs)"
    if [ -n "$_epochs" ]; then set -- "$@" "max_epochs=$_epochs"; fi
  fi
  set -f   # EXTRA is split on blanks on purpose; its words are never file-name patterns
  # shellcheck disable=SC2086
  set -- "$@" ${EXTRA:-}
  echo "+ $PY $ROOT/CLIP/run.py with $*" >&2
  exec "$PY" "$ROOT/CLIP/run.py" with "$@"
}
