#!/bin/sh
# The main demo (README): on the synthetic demo world, pre-train a tiny ViLT (MODEL=meter: a tiny METER) with MLM+ITM,
# fine-tune it on the demo VQA with every tuning method from that checkpoint, and print one table
#   method | updated params | additional GFLOPs | VQA score | training time (s)
# also written as JSON and PNG. About 6-9 minutes on a 2-core CPU; fresh clones run script/setup.sh first.
# MODEL=clip: a tiny CLIP pre-trained on the shapes world's captions, every prompt-learning method on base-to-new
# 16-shot (python -m clip_apt.demo; table method | params | GFLOPs | base | new | H).
# MODEL=sd: the Stable Diffusion demo instead (python -m sd_apt.demo: a tiny latent diffusion model pre-trained on the
# shapes world, DreamBooth of an unseen subject with APT and LoRA, grid PNG + metric table).
# Extra arguments go to `python -m shared_apt.harness.experiments.demo` (e.g. --methods full,apt --no-progress --fresh).
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${MODEL:=vilt}"                                                   # vilt | meter | clip | sd
: "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"       # demo world, tokenizer, pre-training, results
: "${OUT:=}"                                                         # results folder (default $DEMO_CACHE/compare_$MODEL)

case "$MODEL" in
  vilt|meter|clip|sd) ;;
  *) echo "error: MODEL=$MODEL; expected vilt, meter, clip or sd" >&2; exit 2 ;;
esac
echo "[demo] set-up (sh script/setup.sh: creates/updates .venv only when needed)" >&2
sh "$ROOT/script/setup.sh"
. "$ROOT/script/_python.sh"
cd "$ROOT"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"
if [ -n "$OUT" ]; then set -- --out "$OUT" "$@"; fi
case "$MODEL" in
  clip) package_path CLIP; exec "$PY" -m clip_apt.demo --cache "$DEMO_CACHE" "$@" ;;
  sd) package_path StableDiffusion; exec "$PY" -m sd_apt.demo --cache "$DEMO_CACHE/sd" "$@" ;;
esac
package_path ViLT METER
exec "$PY" -m shared_apt.harness.experiments.demo --model "$MODEL" --cache "$DEMO_CACHE" "$@"
