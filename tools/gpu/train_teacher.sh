#!/usr/bin/env bash
# Train a teacher on the GPU with the project's own trainer, inside one call (results/gpu/README.md):
#
#     bash tools/gpu/train_teacher.sh ARCH EPOCHS [more `ifhe train-teacher` flags]     # EPOCHS may be "auto"
#
# First times the trainer (tools/gpu/time_trainer.py, ~20 s) and prints the expected time; EPOCHS that would
# not finish before GPU_TIME_LIMIT_S (default 540 s from the start) are lowered to what fits (a one-cycle
# schedule cut short never anneals), unless GPU_FORCE_EPOCHS=1. The trainer runs under `timeout` and gets SIGINT
# before the limit. A killed training is not resumed on the GPU: the data (46 MB) + its checkpoint with the
# optimizer (18 MB for wrn40_2) + the tree do not fit the 64 MiB that a call carries; what exists comes back.
# $OUT receives 4 files: cifar10_ARCH.safetensors (finished; else cifar10_ARCH_partial.safetensors from the last
# checkpoint), train_ARCH.log, train_ARCH_metrics.jsonl (one line per epoch; its test accuracy is on the 2,000
# packed test images) and train_ARCH.json (timing, command, outcome). Evaluate back on the CPU, on the whole
# test set: `ifhe evaluate $OUT/cifar10_ARCH.safetensors --data $IFHE_DATA`.
# Mixed precision (bf16) is passed (TRAIN_PRECISION, default bf16) once `ifhe train-teacher` has --precision.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
ARCH=${1:?usage: train_teacher.sh ARCH EPOCHS [train-teacher flags]}
EPOCHS=${2:?usage: train_teacher.sh ARCH EPOCHS [train-teacher flags]}
shift 2
PY=${PYTHON:-python3}
START=$(date +%s)
LIMIT=${GPU_TIME_LIMIT_S:-540}
DEV=${GPU_DEVICE:-cuda}
OUT=${OUT:-$ROOT/gpu_out}
NAME=cifar10_$ARCH
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ifhe_train.XXXXXX")
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
LOG=$OUT/train_$ARCH.log
: > "$LOG"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
say() { echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

say "train $ARCH for $EPOCHS epochs on $DEV within ${LIMIT}s; extra flags: $*"
if [ ! -f "${IFHE_DATA:-}/cifar10-train.npz" ]; then
  "$PY" tools/gpu/pack_data.py unpack gpu_data "$WORK/data" >> "$LOG" 2>&1 || { say "unpacking gpu_data failed"; exit 1; }
  export IFHE_DATA=$WORK/data
fi
PRECISION=()
if "$PY" -m ifhe train-teacher --help 2>/dev/null | grep -q -- --precision; then
  PRECISION=(--precision "${TRAIN_PRECISION:-bf16}")
else
  say "ifhe train-teacher has no --precision yet: training in fp32 with the data on the CPU, as train.py does"
fi

# the trainer's own pace on this machine, and the epochs that fit in what is left
"$PY" tools/gpu/time_trainer.py --arch "$ARCH" --device "$DEV" --limit-s $(( LIMIT - $(date +%s) + START )) \
  ${PRECISION[@]+"${PRECISION[@]}"} $([ "$EPOCHS" != auto ] && echo --epochs "$EPOCHS") --json "$WORK/timing.json" \
  2>&1 | tee -a "$LOG"
FIT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['epochs_fit'])" "$WORK/timing.json" 2>/dev/null || echo "")
RUN_EPOCHS=$EPOCHS
if [ -z "$FIT" ]; then
  say "could not time the trainer; training $EPOCHS epochs, stopped at the limit if need be"
  [ "$EPOCHS" = auto ] && { say "EPOCHS=auto needs the timing"; exit 1; }
elif [ "$EPOCHS" = auto ] || { [ "$EPOCHS" -gt "$FIT" ] && [ "${GPU_FORCE_EPOCHS:-0}" != 1 ]; }; then
  RUN_EPOCHS=$FIT
  say "training $FIT epochs (asked: $EPOCHS): what fits before the limit"
fi
[ "$RUN_EPOCHS" -ge 1 ] 2>/dev/null || { say "not one epoch fits in the time left"; exit 1; }

cp -r pretrained "$WORK/zoo"  # --publish writes here, and --init-from still finds the zoo's models
LEFT=$(( LIMIT - $(date +%s) + START - 25 ))
CMD=(-m ifhe train-teacher --arch "$ARCH" --epochs "$RUN_EPOCHS" --device "$DEV" --out "$WORK/train"
     --publish "$NAME" ${PRECISION[@]+"${PRECISION[@]}"} "$@")
say "python ${CMD[*]} (stopped after ${LEFT}s at the latest)"
IFHE_PRETRAINED=$WORK/zoo timeout --signal=INT --kill-after=20 "$LEFT" "$PY" "${CMD[@]}" > "$WORK/train.out" 2>&1
RC=$?
tr '\r' '\n' < "$WORK/train.out" | grep -v -E '^\s*$|[0-9]+%\|' | tee -a "$LOG"
say "trainer exit status $RC"

MODEL=$OUT/$NAME.safetensors
if grep -q "^published $NAME:" "$WORK/train.out"; then  # the CLI publishes only a finished training
  cp "$WORK/zoo/$NAME.safetensors" "$MODEL"
elif [ -f "$WORK/train/checkpoint.safetensors" ]; then
  MODEL=$OUT/${NAME}_partial.safetensors
  "$PY" - "$WORK/train/checkpoint.safetensors" "$ARCH" "$MODEL" <<'PYTHON' 2>&1 | tee -a "$LOG"
import sys
from ifhe.checkpoint import load_state
from ifhe.models import create_model
from ifhe.zoo import save_model
state, meta = load_state(sys.argv[1])
model = create_model(sys.argv[2], 10)
model.load_state_dict(state["model"])
save_model(sys.argv[3], model, "cifar10", {"partial": True, "step": int(state["step"])})
print(f"unfinished: the weights at step {int(state['step'])} saved to {sys.argv[3]}")
PYTHON
else
  MODEL=""
fi
[ -f "$WORK/train/metrics.jsonl" ] && cp "$WORK/train/metrics.jsonl" "$OUT/train_${ARCH}_metrics.jsonl"
"$PY" - "$WORK/timing.json" "$OUT/train_$ARCH.json" "$RC" "$RUN_EPOCHS" "$(( $(date +%s) - START ))" "$MODEL" \
  "python ${CMD[*]}" <<'PYTHON'
import json, sys
from pathlib import Path
timing, out, rc, epochs, seconds, model, command = sys.argv[1:]
info = {"exit_status": int(rc), "epochs": int(epochs), "seconds": int(seconds), "model": Path(model).name or None,
        "finished": bool(model) and not model.endswith("_partial.safetensors"), "command": command,
        "timing": json.loads(Path(timing).read_text()) if Path(timing).exists() else None}
try:
    import torch
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
except Exception as e:  # the summary must be written whatever happened
    info["device"] = repr(e)
Path(out).write_text(json.dumps(info, indent=1) + "\n")
print(json.dumps({k: v for k, v in info.items() if k != "timing"}))
PYTHON
say "done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
