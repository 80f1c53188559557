#!/usr/bin/env bash
# The seeded sweeps of docs/RESULTS.md, in order (each resumable: rerun this script and finished cells are
# skipped, unfinished ones resume from their checkpoints). Commits each sweep's resumable state (sweep.json,
# cells/) every few minutes and its tables at its end. Usage: bash tools/sweeps.sh [a b c ...]
set -u
cd "$(dirname "$0")/.."
export IFHE_DATA="${IFHE_DATA:-$(cd .. && pwd)/shared/data}"
JOBS="${JOBS:-2}"
common=(--table cifar10 --threads 1 --jobs "$JOBS" --precision fp32)
# ALLOW_MIXED=1: a later invocation whose calibration step is more than 20% off the first one's still runs; the
# table then groups the cells by machine speed and says so (the host's speed drifts: sweep g measured 0.256-0.35 s)
[ "${ALLOW_MIXED:-0}" = 1 ] && common+=(--allow-mixed-machines)

# SWEEP_REPO: the checkout the results go to and are committed in (default: this one). Running the code of a
# frozen worktree (cd there) with SWEEP_REPO=/path/to/main keeps engine edits in main away from a running sweep
# while its resumable state lands on main.
REPO="${SWEEP_REPO:-.}"

commit() {  # paths (relative to REPO)... ; retries while another commit holds the index
  for _ in 1 2 3 4 5; do
    git -C "$REPO" add -- "$@" 2>/dev/null && { git -C "$REPO" diff --cached --quiet -- "$@" || git -C "$REPO" commit -qm "results: $SWEEP sweep progress (resumable state)" -- "$@"; } && return 0
    sleep 5
  done
}

run() {  # name, args...
  SWEEP=$1; shift
  rel=results/sweep-$SWEEP
  out="$REPO/$rel"
  ( while sleep 300; do commit "$rel/sweep.json" "$rel/cells"; done ) & watcher=$!
  ifhe reproduce "${common[@]}" --out "$out" "$@"
  status=$?
  kill "$watcher" 2>/dev/null
  commit "$rel/sweep.json" "$rel/cells" "$rel/table.md" "$rel/results.json" "$rel/curves.png"
  echo "sweep $SWEEP finished with status $status"
}

[ $# -gt 0 ] || set -- a b c
for s in "$@"; do
  case $s in
    a) run a --methods ifhe cmi deepinversion --budget-minutes 20 --seeds 3 --compare cmi:deepinversion ;;
    b) run b --methods ifhe-a0.5 ifhe-a0 --budget-minutes 10 --seeds 3 ;;
    c) run c --methods fast+ifhe fast --budget-minutes 10 --seeds 3 ;;
    d-ifhe) run d --methods ifhe --budget-minutes 60 --seeds 1 ;;
    d-fast) run d --methods fast+ifhe --budget-minutes 60 --seeds 1 ;;
    e) run e --methods ifhe cmi --budget-minutes 20 --seeds 1 --set synth.iterations=200 --set synth.reset_generator=true ;;
    f) run f --methods adi dafl dafl+ifhe zskt dfq dfq+ifhe --budget-minutes 10 --seeds 2 --compare dafl+ifhe:dafl --compare dfq+ifhe:dfq ;;
    # the budget rule's pilot (README "Budgets"): KD's share of the run's time, on WRN-16-2 -> WRN-40-1 (a pair no
    # final table uses), 5 CPU-minutes, 1 thread; each rule its own folder
    pilot-kd50) run pilot-kd50 --table cifar10-pilot --methods ifhe fast --budget-minutes 5 --seeds 1 --precision auto ;;
    pilot-share0.5) run pilot-share0.5 --table cifar10-pilot --methods ifhe fast --budget-minutes 5 --seeds 1 --precision auto --set distill.kd_share=0.5 ;;
    pilot-share0.8) run pilot-share0.8 --table cifar10-pilot --methods ifhe fast --budget-minutes 5 --seeds 1 --precision auto --set distill.kd_share=0.8 ;;
    # accuracy per CPU-minute: 10 minutes on 2 cores (20 CPU-minutes a run, one run at a time), the budget rule
    # of the pilot, precision auto; then the 60-minute run of its best variant
    g) JOBS=1 run g --threads 2 --jobs 1 --precision auto --methods ifhe cmi fast fast+ifhe nayer nayer+ifhe deepinversion --budget-minutes 10 --seeds 3 --set distill.kd_share="${KD_SHARE:-0.8}" --compare ifhe:cmi --compare fast+ifhe:fast --compare nayer+ifhe:nayer ;;
    # the 60-minute run: g's best variant (Fast) and its best IFHE preset (Fast + L_H), g's settings otherwise
    d60) JOBS=1 run d60 --threads 2 --jobs 1 --precision auto --methods fast fast+ifhe --budget-minutes 60 --seeds 1 --set distill.kd_share="${KD_SHARE:-0.8}" --compare fast+ifhe:fast ;;
    # g's cells that the shipped feature banks need (DeepInversion, CMI, IFHE x 3 seeds), first; same settings and
    # folder as g, whose later invocation skips them
    g-banks) JOBS=1 run g --threads 2 --jobs 1 --precision auto --methods deepinversion ifhe cmi --budget-minutes 10 --seeds 3 --set distill.kd_share="${KD_SHARE:-0.8}" ;;
    # bf16 against fp32 at equal steps (30 rounds, no time budget): IFHE, CMI, Fast, 3 seeds each
    prec-fp32) run prec-fp32 --methods ifhe cmi fast --budget-minutes 1000 --seeds 3 --precision fp32 --set rounds=30 ;;
    prec-bf16) run prec-bf16 --methods ifhe cmi fast --budget-minutes 1000 --seeds 3 --precision bf16 --set rounds=30 ;;
    # across families: the paper's VGG11-BN -> ResNet18, with g's accounting, precision and budget rule
    vgg) run vgg --table cifar10-vgg-paper --threads 2 --jobs 1 --precision auto --methods ifhe cmi --budget-minutes 10 --seeds 3 --set distill.kd_share="${KD_SHARE:-0.8}" ;;
    *) echo "unknown sweep $s" >&2 ;;
  esac
done
