#!/bin/sh
# Real-data bench of every CLIP method on an image-classification folder:
#   sh script/clip_bench.sh FOLDER [--shots 16] [--seeds 1] [--json OUT] [options]
#   e.g. sh script/clip_bench.sh /data/my_images --json bench.json
# FOLDER: CoOp's split format (one split_zhou_*.json + image root), train/ + test/ (or val/) class folders, or plain
# class folders (split 50/20/30 per class here). Copies the images (RGB, 64 px) into a cache, pre-trains the tiny
# CLIP contrastively on the train split (all classes; captions never use the evaluation template), then runs every
# method of the CLIP demo on base-to-new K-shot and prints the demo's table (params, GFLOPs, base / new / H).
# A real set to try: `sh script/clip_bench.sh --from-sklearn-digits digits` writes scikit-learn's bundled
# handwritten digits as class folders into digits/. Options: `python -m clip_apt.bench --help` (--methods, --epochs,
# --pretrain-steps, --image-dir, --cache, --out).
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${CLIP_BENCH_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo}"   # image copies, pre-trained CLIPs, results
if [ "$#" -lt 1 ]; then
  echo "usage: sh script/clip_bench.sh FOLDER [--shots 16] [--seeds 1] [--json OUT] [options]" >&2; exit 2
fi
. "$ROOT/script/_python.sh"
# paths are given relative to the caller's directory: resolve existing folders and the --json / --out targets
# before changing directory (the list is rebuilt in place: each argument is shifted off and its resolved form
# appended)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
next_is_path=0
for a in "$@"; do
  shift
  if [ "$next_is_path" = 1 ]; then set -- "$@" "$(abs "$a")"; next_is_path=0; continue; fi
  case "$a" in
    --json|--out|--cache|--from-sklearn-digits) set -- "$@" "$a"; next_is_path=1 ;;
    --json=*|--out=*|--cache=*|--from-sklearn-digits=*) set -- "$@" "${a%%=*}=$(abs "${a#*=}")" ;;
    -*) set -- "$@" "$a" ;;
    *) if [ -d "$a" ]; then set -- "$@" "$(cd "$a" && pwd)"; else set -- "$@" "$a"; fi ;;
  esac
done
cd "$ROOT"
package_path CLIP
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:sacred.dependencies}"
exec "$PY" -m clip_apt.bench --cache "$CLIP_BENCH_CACHE" "$@"
