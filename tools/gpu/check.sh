#!/usr/bin/env bash
# GPU check in one short call (results/gpu/README.md): versions, the CUDA tests, a 2-minute `ifhe run` on the
# GPU, the GPU benchmarks, and the project's teacher trainer timed. Run from the repository root with the packed
# data carried (gpu_data/, made by `python tools/gpu/pack_data.py pack`):
#
#     bash tools/gpu/check.sh                  # on the GPU machine; results under $OUT
#     GPU_CHECK_DRY=1 bash tools/gpu/check.sh  # on a CPU: every step with tiny budgets (about 2 minutes)
#
# No step stops the script: each runs under `timeout` (never past GPU_CHECK_DEADLINE_S, default 540 s from the
# start), and its exit status and seconds are logged. Nothing is installed: python finds the engine through
# PYTHONPATH. $OUT receives 4 files (train_teacher.sh 4 more: a call brings back 8): check.log (every step,
# timestamped, with the tail of its output), results.json (steps, versions, benchmark rows, trainer timing, the
# run's evaluations and result), run_ifhe_metrics.jsonl and run_ifhe_student.safetensors (evaluate it on the
# whole test set back here: `ifhe evaluate FILE`).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_DEADLINE_S:-540} ))
OUT=${OUT:-$ROOT/gpu_out}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ifhe_gpu.XXXXXX")
mkdir -p "$OUT"
LOG=$OUT/check.log
: > "$LOG"
: > "$WORK/steps.tsv"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT

if [ "$DRY" = 1 ]; then
  DEV=cpu
  export OMP_NUM_THREADS=1
  # as on the GPU machine: no Streamlit, Plotly or openTSNE (stand-ins that fail to import shadow them)
  for m in streamlit plotly openTSNE; do
    mkdir -p "$WORK/absent/$m" && echo "raise ImportError('$m is absent on the GPU machine')" > "$WORK/absent/$m/__init__.py"
  done
  export PYTHONPATH=$WORK/absent:$PYTHONPATH
  RUN_ARGS=(--scale cpu --budget-minutes 0.1 --synth-batch 8 --iterations 2 --kd-steps 2 --kd-batch 8
            --eval-images 100 --eval-every 4 --threads 1)
  BENCH_ARGS=(--quick --device cpu)
  TRAIN_ARGS=(--arch wrn16_1 --steps 2 --warmup 1 --batch-size 8 --device cpu)
else
  DEV=cuda
  RUN_ARGS=(--scale reference --budget-minutes 2 --eval-images 2000 --eval-every 400)
  BENCH_ARGS=(--device cuda)
  TRAIN_ARGS=(--arch wrn40_2 --steps 100 --warmup 20 --device cuda)
fi

say() { echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: runs it under timeout; logs its exit status, its seconds and its output's tail
step() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$(( DEADLINE - $(date +%s) - 20 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    say "--- $name skipped: the deadline is near"
    printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$WORK/steps.tsv"
    return 0
  fi
  say ">>> $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  tr '\r' '\n' < "$WORK/$name.log" | grep -v -E '^\s*$|[0-9]+%\|' | tail -n 60 | sed 's/^/    /' >> "$LOG"
  say "<<< $name rc=$rc after $(( $(date +%s) - t0 ))s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$WORK/steps.tsv"
}

versions() {  # the machine, the packages, and that the engine's run path imports without the app's packages
  nvidia-smi || echo "no nvidia-smi"
  "$PY" - <<'PYTHON'
import importlib, json, platform, torch
v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
     "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    v |= {"gpu": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported(),
          "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
for m in ("torchvision", "safetensors", "numpy", "PIL", "yaml", "tqdm", "sklearn", "scipy", "pytest",
          "streamlit", "plotly", "openTSNE"):
    try:
        v[m] = getattr(importlib.import_module(m), "__version__", "present")
    except ImportError:
        v[m] = None
import ifhe.cli, ifhe.distill, ifhe.experiment, ifhe.train
print(json.dumps(v))
PYTHON
  "$PY" -m ifhe zoo
}
export -f versions

say "ifhe-lab GPU check: dry=$DRY, device $DEV, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
step env 60 bash -c versions
step unpack 180 "$PY" tools/gpu/pack_data.py unpack gpu_data "$WORK/data"
export IFHE_DATA=$WORK/data
step pytest_cuda 180 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
step run_ifhe 240 "$PY" -m ifhe run --method ifhe --device "$DEV" "${RUN_ARGS[@]}" --quiet --out "$WORK/run_ifhe"
step bench 180 "$PY" tools/gpu/bench_gpu.py "${BENCH_ARGS[@]}" --json "$WORK/bench.json"
step trainer 120 "$PY" tools/gpu/time_trainer.py "${TRAIN_ARGS[@]}" --json "$WORK/trainer.json"

for f in metrics.jsonl student.safetensors; do
  [ -f "$WORK/run_ifhe/$f" ] && cp "$WORK/run_ifhe/$f" "$OUT/run_ifhe_$f"
done
"$PY" - "$WORK" "$OUT/results.json" <<'PYTHON'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
def text(name):
    return (work / name).read_text() if (work / name).exists() else ""
def read(name):
    return json.loads(text(name)) if text(name) else None
env = next((json.loads(l) for l in text("env.log").splitlines() if l.startswith("{")), None)
steps = [dict(zip(("step", "rc", "seconds"), l.split("\t"))) for l in text("steps.tsv").splitlines()]
run = [l for l in text("run_ifhe.log").splitlines() if l.startswith(("round ", "finished"))]
out.write_text(json.dumps({"env": env, "steps": steps, "run_ifhe": run, "run_ifhe_result": read("run_ifhe/result.json"),
                           "bench": read("bench.json"), "trainer": read("trainer.json")}, indent=1) + "\n")
PYTHON
say "summary (step, exit status, seconds):"
awk -F'\t' '{printf "  %-12s %-8s %s\n", $1, $2, $3}' "$WORK/steps.tsv" | tee -a "$LOG"
grep -h -E '^(synth|kd|train) |^round |^finished' "$WORK/bench.log" "$WORK/run_ifhe.log" 2>/dev/null
grep -h -E '^trainer' "$WORK/trainer.log" 2>/dev/null
say "done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
