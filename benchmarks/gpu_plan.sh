#!/usr/bin/env bash
# Planning (issue 12) on a GPU: many 50-task `vidpred plan` runs of the model arm side by side,
# which on the 2-core CPU take about 40 minutes each. One `device` call (its 10-minute limit):
#
#   make gpu-wheels                                     # here, with PyPI: .gpu/wheels
#   mkdir -p .gpu/runs && cp -r RUN .gpu/runs/NAME      # the runs to plan with (best.pt, config.yaml)
#   bash benchmarks/gpu_plan.sh "$OUT"                  # there: device run, carry [".gpu"], timeout_s 600
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_plan.sh /tmp/gpu_plan_dry   # the same steps, tiny, on a CPU first
#
# Steps: the pymunk/tfrecord wheels (as benchmarks/gpu_check.sh), the machine, a timing run alone
# (TIMING_EPISODES tasks, 0 for none, the defaults, the first run of JOBS: the planner's seconds per step on
# the device without other jobs beside it), then every job of JOBS at once, each
# `vidpred plan .gpu/runs/RUN --episodes EPISODES --seed 0 --arms model FLAGS`. JOBS is a
# space-separated list of NAME:RUN:FLAGS, the flags comma-separated (NAME:RUN: alone is the
# defaults). Every job is interrupted DEADLINE_S seconds after the start (default 520): it keeps
# its finished episodes in NAME.json.episodes.jsonl (the `vidpred plan` episode log). Comes back
# in OUT: log.txt and plans.tgz (every job's NAME.json, or its episode log where it was cut off,
# and its output NAME.txt). Each job gets THREADS torch threads (default nproc / jobs).
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_plan.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
DEADLINE_S=${DEADLINE_S:-520}
EPISODES=${EPISODES:-50}
TIMING_EPISODES=${TIMING_EPISODES:-3}
JOBS=${JOBS:-"base1:base1:"}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"
START=$(date +%s)
left() {  # seconds to the deadline, at least 1 (timeout 0 would mean no limit at all)
    local t=$((DEADLINE_S - ($(date +%s) - START)))
    echo $((t > 0 ? t : 1))
}
say() { echo "== $* ($(($(date +%s) - START)) s)" | tee -a "$LOG"; }

if ! $PY -c "import pymunk" 2>/dev/null; then
    $PY -m pip install --no-index --no-deps .gpu/wheels/*.whl >>"$LOG" 2>&1 || say "wheels: install failed"
fi
{ nvidia-smi || true; nproc; $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'; } >>"$LOG" 2>&1

EXTRA=()
[ "$QUICK" = 1 ] && EPISODES=2 TIMING_EPISODES=1 EXTRA=(--steps 2)

plan() {  # plan NAME RUN EPISODES FLAGS...: its output in $WORK/NAME.txt
    local name=$1 run=$2 episodes=$3 rc
    shift 3
    timeout -s INT -k 20 "$(left)" $PY -m vidpred plan ".gpu/runs/$run" --episodes "$episodes" --seed 0 \
        --arms model --device "$DEVICE" --out "$WORK/$name.json" --no-progress "${EXTRA[@]}" "$@" \
        >"$WORK/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc after $(($(date +%s) - START)) s" >>"$WORK/$name.txt"
}

read -r -a SPECS <<<"$JOBS"
first=${SPECS[0]#*:}
if [ "$TIMING_EPISODES" -gt 0 ]; then
    say "timing: ${first%%:*}, $TIMING_EPISODES tasks alone"
    OMP_NUM_THREADS=$(nproc) plan timing "${first%%:*}" "$TIMING_EPISODES"
    cat "$WORK/timing.txt" >>"$LOG"
fi

THREADS=${THREADS:-$(($(nproc) / ${#SPECS[@]} > 0 ? $(nproc) / ${#SPECS[@]} : 1))}
export OMP_NUM_THREADS=$THREADS
say "jobs: $JOBS; $EPISODES tasks each, $THREADS threads each"
for spec in "${SPECS[@]}"; do
    name=${spec%%:*} rest=${spec#*:}
    run=${rest%%:*} flags=${rest#*:}
    extra=()
    [ -n "$flags" ] && IFS=, read -r -a extra <<<"$flags"
    plan "$name" "$run" "$EPISODES" "${extra[@]}" &
done
wait
for spec in "${SPECS[@]}"; do
    name=${spec%%:*}
    { echo "== $name"; tail -n 8 "$WORK/$name.txt"; } >>"$LOG"
done
(cd "$WORK" && tar -czf "$OUT/plans.tgz" ./*.txt $(ls ./*.json ./*.jsonl 2>/dev/null))
say "done; outputs in $OUT"
