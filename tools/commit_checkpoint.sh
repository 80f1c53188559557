#!/usr/bin/env bash
# Commit a training's resumable checkpoint so that a later session (on a fresh machine) can continue it, within
# the rules of README "Resumable from git": at most 40 MB, and at most three snapshots of one training in git's
# history. Usage: bash tools/commit_checkpoint.sh RUN_FOLDER NAME
#   RUN_FOLDER: the --out folder of `ifhe train-teacher` (holds checkpoint.safetensors and metrics.jsonl)
#   NAME: the folder under checkpoints/ (e.g. cifar10_vgg11_bn)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?run folder}; name=${2:?name}
src="$run/checkpoint.safetensors"; dst="checkpoints/$name"
[ -f "$src" ] || { echo "no checkpoint in $run" >&2; exit 1; }
size=$(stat -c %s "$src")
limit=$((40 * 1024 * 1024))
if [ "$size" -gt "$limit" ]; then
  echo "$src is $((size / 1048576)) MB, over 40 MB: train with --momentum none (weights only, momentum rebuilt on resume)" >&2
  exit 1
fi
snapshots=$(git log --oneline -- "$dst/checkpoint.safetensors" | wc -l)
if [ "$snapshots" -ge 3 ]; then
  echo "$dst already has $snapshots snapshots in git's history (at most 3): finish the training instead" >&2
  exit 1
fi
mkdir -p "$dst"
# a training run straight into checkpoints/NAME (--out checkpoints/NAME --resume) is committed where it lies
[ "$src" -ef "$dst/checkpoint.safetensors" ] || cp "$src" "$dst/checkpoint.safetensors"
[ ! -f "$run/metrics.jsonl" ] || [ "$run/metrics.jsonl" -ef "$dst/metrics.jsonl" ] || cp "$run/metrics.jsonl" "$dst/metrics.jsonl"
git add "$dst"
git commit -qm "checkpoints/$name: snapshot $((snapshots + 1)) of 3 (resume: ifhe train-teacher ... --out $dst --resume)" -- "$dst"
echo "committed snapshot $((snapshots + 1)) of 3 of $name ($((size / 1048576)) MB)"
