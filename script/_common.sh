# Shared by script/*_run.sh and script/*_eval.sh (sourced with `.`, not run). POSIX sh (dash, bash, ...). Expects ROOT
# (the repository root), MODEL, METHOD, DATA_ROOT, LOAD_PATH, NUM_GPUS, NUM_NODES, PER_GPU_BATCHSIZE (and CKPT for
# evaluation) to be set by the calling script.
#
# With DATA_ROOT empty the demo world (synthetic shapes, upstream arrow formats) and a small tokenizer are generated
# once into DEMO_CACHE, and a tiny model of the same code is trained / evaluated for DEMO_STEPS steps on CPU or GPU.

. "$ROOT/script/_python.sh"

case "$MODEL" in
  vilt) ENTRY="$ROOT/ViLT/run.py" ;;
  meter) ENTRY="$ROOT/METER/run.py" ;;
  *) echo "error: MODEL=$MODEL; expected vilt or meter" >&2; exit 2 ;;
esac
if [ ! -f "$ENTRY" ]; then
  echo "error: MODEL=$MODEL needs $ENTRY, which does not exist in this checkout" >&2; exit 2
fi
case "$METHOD" in
  full|classifier|shallow_prompt|deep_prompt|lora|adapter|scaled_pa|apt) ;;
  *) echo "error: METHOD=$METHOD; expected one of full classifier shallow_prompt deep_prompt lora adapter scaled_pa apt" >&2; exit 2 ;;
esac

# task_config <vqa|nlvr2|f30k> <train|eval>: the upstream named config of the task
task_config() {
  case "$MODEL:$1:$2" in
    vilt:vqa:train) echo task_finetune_vqa_randaug ;;
    vilt:vqa:eval) echo task_finetune_vqa ;;
    vilt:nlvr2:train) echo task_finetune_nlvr2_randaug ;;
    vilt:nlvr2:eval) echo task_finetune_nlvr2 ;;
    vilt:f30k:train) echo task_finetune_irtr_f30k_randaug ;;
    vilt:f30k:eval) echo task_finetune_irtr_f30k ;;
    meter:vqa:*) echo task_finetune_vqa_clip_bert ;;
    meter:nlvr2:*) echo task_finetune_nlvr2_clip_bert ;;
    meter:f30k:*) echo task_finetune_irtr_f30k_clip_bert ;;
  esac
}

# model_args <vqa|nlvr2|f30k> <train|eval>: what follows the task config (METER, as its README commands: the CLIP-16
# and RoBERTa encoder configs, RandAugment for training, and on real data the APT authors' image sizes, docs/methods.md, optimisation)
model_args() {
  case "$MODEL:$2" in
    meter:train) echo clip16 text_roberta clip_randaug ;;
    meter:eval) echo clip16 text_roberta ;;
  esac
  if [ "$MODEL" = meter ] && [ "$DEMO" = 0 ]; then
    case "$1" in
      vqa|f30k) echo image_size=384 ;;
      nlvr2) echo image_size=288 ;;
    esac
  fi
}

DEMO=0
if [ -z "$DATA_ROOT" ]; then
  DEMO=1
  : "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"
  : "${DEMO_STEPS:=2}"
  : "${DEMO_SCALE:=0.25}"
  echo "DATA_ROOT is empty: using the demo world in $DEMO_CACHE (tiny $MODEL, $DEMO_STEPS steps)" >&2
  DEMO_VARS="$("$PY" -m shared_apt.vl.training.demo --cache "$DEMO_CACHE" --scale "$DEMO_SCALE")" || {
    echo "error: could not prepare the demo world in $DEMO_CACHE" >&2; exit 1; }
  eval "$DEMO_VARS"   # shell-quoted assignments (shlex.quote) of DEMO_DATA_ROOT, DEMO_TOKENIZER, ...
  DATA_ROOT="$DEMO_DATA_ROOT"
fi

# last_checkpoint <exp_name>: newest last.ckpt of that experiment under the demo log folder of this MODEL ("" if
# none; each model has its own folder, so an evaluation never picks up the other model's checkpoint)
last_checkpoint() {
  ls -t "$DEMO_CACHE"/runs/"$MODEL"/"$1"*_seed*_from_*/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1
}

# exp_name <vqa|nlvr2|f30k>: the experiment name of the task's fine-tuning config (its log folder prefix)
exp_name() {
  case "$1" in vqa) echo finetune_vqa ;; nlvr2) echo finetune_nlvr2 ;; f30k) echo finetune_irtr_f30k ;; esac
}

# launch <vqa|nlvr2|f30k> <train|eval> [key=value ...]: the entry point with the task config, the model's encoder
# configs (before the tiny demo config and the method, which must come after them), then the keys. Evaluation
# (upstream EVAL.md: test_only=True precision=32 load_path=<ckpt>) needs LOAD_PATH (CKPT); in demo mode it defaults
# to the newest checkpoint of the task's run script. The argument list is built in the positional parameters
# (POSIX sh has no arrays), so values with spaces (paths) stay one argument each.
launch() {
  _task="$1"; _phase="$2"
  shift 2
  if [ "$_phase" = eval ]; then
    if [ "$DEMO" = 1 ] && [ -z "$LOAD_PATH" ]; then
      LOAD_PATH="$(last_checkpoint "$(exp_name "$_task")")"
      if [ -z "$LOAD_PATH" ]; then
        echo "error: no demo checkpoint of $(exp_name "$_task") in $DEMO_CACHE yet: run the task's *_run.sh first (or set CKPT)" >&2
        exit 2
      fi
    fi
    if [ -z "$LOAD_PATH" ]; then
      echo "error: set CKPT (or LOAD_PATH) to the checkpoint to evaluate" >&2; exit 2
    fi
    set -- test_only=True precision=32 "$@"
  fi
  set -f   # the words split on purpose below are never file-name patterns (EXTRA may hold * or ?)
  # named configs first (plain words, split on purpose), then the caller's keys
  # shellcheck disable=SC2046
  set -- $(task_config "$_task" "$_phase") $(model_args "$_task" "$_phase") "$@"
  if [ "$DEMO" = 1 ]; then
    set -- "$@" "tiny_$MODEL" "tokenizer=$DEMO_TOKENIZER" "vocab_size=$DEMO_VOCAB_SIZE" \
      "vqav2_label_size=$DEMO_VQA_LABELS" "cls_token_id=$DEMO_CLS_TOKEN_ID" \
      "log_dir=$DEMO_CACHE/runs/$MODEL" "num_workers=0" "max_steps=$DEMO_STEPS" "val_check_interval=$DEMO_STEPS" \
      "batch_size=$((PER_GPU_BATCHSIZE * NUM_GPUS * NUM_NODES))"
  fi
  set -- "$@" "data_root=$DATA_ROOT" "num_gpus=$NUM_GPUS" "num_nodes=$NUM_NODES" \
    "per_gpu_batchsize=$PER_GPU_BATCHSIZE" "peft_$METHOD"
  if [ -n "$LOAD_PATH" ]; then set -- "$@" "load_path=$LOAD_PATH"; fi
  if [ "$DEMO" = 1 ] && [ "$_task" = f30k ]; then set -- "$@" "draw_false_text=3"; fi  # few demo captions
  # EXTRA: more key=value words, split on blanks on purpose
  # shellcheck disable=SC2086
  set -- "$@" ${EXTRA:-}
  echo "+ $PY $ENTRY with $*" >&2
  exec "$PY" "$ENTRY" with "$@"
}
