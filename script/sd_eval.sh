#!/bin/sh
# DINO / CLIP-I / CLIP-T (DreamBooth's metrics) of sample folders against the subject's real images.
#   SAMPLES=runs/sd_dreambooth_apt/samples REAL=photos/dog DINO=/models/dino-vits16 CLIP=/models/clip-vit-b32 \
#     sh script/sd_eval.sh
# Encoders are local transformers folders; with both empty the tiny random encoders of the demo are used (they only
# exercise the code).
set -eu
: "${SAMPLES:=runs/sd_dreambooth_apt/samples}"   # one or more sample folders (space separated)
: "${REAL:=}"                                    # subject images; "" = the demo subject
: "${DINO:=}"                                    # local DINO ViT-S/16 folder (transformers)
: "${CLIP:=}"                                    # local CLIP folder (transformers CLIPModel)
: "${IDENTIFIER:=sks}"
: "${DROP_IDENTIFIER:=false}"                    # remove the identifier from prompts for CLIP-T
: "${OUT:=${SAMPLES%% *}/../metrics.json}"
: "${DEMO_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/apt_vl_demo/sd}"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/script/_python.sh"
package_path StableDiffusion
if [ -z "$REAL" ]; then
  eval "$("$PY" -m sd_apt.demo --cache "$DEMO_CACHE" --prepare)"
  REAL=$DEMO_INSTANCE_DIR; IDENTIFIER=$DEMO_IDENTIFIER
fi
if [ -z "$DINO" ] && [ -z "$CLIP" ]; then
  echo "[sd_eval] no encoder folders given: tiny random encoders (code check only, not a measurement)" >&2
  eval "$("$PY" -c "
import os, shlex, sys
from sd_apt import tiny, demo
d = os.path.join(sys.argv[1], 'tiny_encoders')
print('DINO=' + shlex.quote(tiny.save_dino(os.path.join(d, 'dino'))))
print('CLIP=' + shlex.quote(tiny.save_clip(os.path.join(d, 'clip'), demo.vocabulary())))
" "$DEMO_CACHE")"
fi
set -- --real "$REAL" --identifier "$IDENTIFIER" --out "$OUT"
[ -n "$DINO" ] && set -- "$@" --dino "$DINO"
[ -n "$CLIP" ] && set -- "$@" --clip "$CLIP"
[ "$DROP_IDENTIFIER" = true ] && set -- "$@" --clip-t-drop-identifier
# shellcheck disable=SC2086
exec "$PY" -m sd_apt.evaluate "$@" --samples $SAMPLES
