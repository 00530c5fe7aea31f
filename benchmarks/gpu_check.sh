#!/usr/bin/env bash
# Every GPU measurement in one device call, each stage under its own timeout, results under $OUT as they come.
# Once, here: ../shared/gpu/ray-wheels.sh .whl (and `echo /.whl/ >> .git/info/exclude`); then, carrying .whl:
#   bash benchmarks/gpu_check.sh                # on the GPU machine, from the repository root (at most 510 s of
#                                                 stages: give the call timeout_s=590, under its 600 s limit)
#   SMOKE=1 bash benchmarks/gpu_check.sh        # here, on CPU, tiny sizes: the script itself works
set -u
OUT=${OUT:-/tmp/raydd-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${SMOKE:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_ARENA_MAX=1
PY=${PYTHON:-python3}; D=/tmp/raydd-in1k; J=$OUT/rded_gpu.json; LOG=$OUT/rded_gpu.log
if [ -n "${SMOKE:-}" ]; then SIZE=(--classes 4 --per-class 12 --ipc 2 --gpus-per-worker 0); else SIZE=(--classes 1000 --per-class 64); fi
stage() {  # stage NAME SECONDS: one stage of rded_gpu.py, its output appended to the log
  local start=$SECONDS
  timeout "$2" "$PY" benchmarks/rded_gpu.py "$1" --data "$D" "${SIZE[@]}" --json "$J" >> "$LOG" 2>&1
  echo "stage $1: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/stages.txt"
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
stage data 110
stage raw 45
stage distill 120
stage actors 130
stage overlap 100
