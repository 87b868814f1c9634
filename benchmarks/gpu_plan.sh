#!/usr/bin/env bash
# Planning (issue 12) on a GPU: many 50-task `vidpred plan` runs of the model arm side by side,
# which on the 2-core CPU take about 40 minutes each. One `device` call (its 10-minute limit):
#
#   make gpu-wheels                                     # here, with PyPI: .gpu/wheels
#   mkdir -p .gpu/runs && cp -r RUN .gpu/runs/NAME      # the runs to plan with (best.pt, config.yaml)
#   bash benchmarks/gpu_plan.sh "$OUT"                  # there: device run, carry [".gpu"], timeout_s 600
#   DEVICE=cpu QUICK=1 THREADS=1 bash benchmarks/gpu_plan.sh /tmp/gpu_plan_dry   # the same steps, tiny, on a CPU first
#
# Steps: the pymunk/tfrecord wheels (as benchmarks/gpu_check.sh), the machine, a timing run (the
# planner's seconds per step on the device with nothing beside it: TIMING_EPISODES tasks, 0 skips
# it, with the first job's RUN and the default flags, nproc threads, at most TIMING_S seconds),
# then every job of JOBS at once, each `vidpred plan .gpu/runs/RUN --episodes EPISODES --seed 0
# --arms model FLAGS`. JOBS is a space-separated list of NAME:RUN:FLAGS, the flags comma-separated
# (NAME:RUN: alone is the defaults). Every job is interrupted DEADLINE_S seconds after the start
# (default 520): it keeps its finished episodes in NAME.json.episodes.jsonl (the `vidpred plan`
# episode log). Comes back in OUT: log.txt and plans.tgz (every job's NAME.json, or its episode
# log where it was cut off, and its output NAME.txt). Each job gets THREADS torch threads
# (default nproc / jobs). QUICK=1: 2 tasks of 2 steps per job, 1 timing task (unless set).
# Exit status: 2 for a bad JOBS, 1 if a job failed (other than being cut off at the deadline).
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_plan.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-520}
TIMING_S=${TIMING_S:-60}
if [ "$QUICK" = 1 ]; then
    EPISODES=${EPISODES:-2} TIMING_EPISODES=${TIMING_EPISODES:-1} EXTRA=(--steps 2)
else
    EPISODES=${EPISODES:-50} TIMING_EPISODES=${TIMING_EPISODES:-3} EXTRA=()
fi
JOBS=${JOBS:-"base1:base1:"}
read -r -a SPECS <<<"$JOBS"
if [ ${#SPECS[@]} = 0 ]; then
    echo "gpu_plan.sh: JOBS is empty; expected NAME:RUN:FLAGS ..." >&2
    exit 2
fi
for spec in "${SPECS[@]}"; do
    if [[ $spec != *:*:* ]]; then
        echo "gpu_plan.sh: JOBS entry '$spec' is not NAME:RUN:FLAGS (NAME:RUN: for the defaults)" >&2
        exit 2
    fi
done
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."  # the repository root: .gpu/, src/
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"
START=$(date +%s)
source benchmarks/gpu_common.sh  # left, say, gpu_setup
gpu_setup

plan() {  # plan NAME RUN EPISODES LIMIT_S FLAGS...: its output in $WORK/NAME.txt, its exit status in NAME.rc
    local name=$1 run=$2 episodes=$3 limit=$4 rc
    shift 4
    timeout -s INT -k 20 "$limit" $PY -m vidpred plan ".gpu/runs/$run" --episodes "$episodes" --seed 0 \
        --arms model --device "$DEVICE" --out "$WORK/$name.json" --no-progress "${EXTRA[@]}" "$@" \
        >"$WORK/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc after $(($(date +%s) - START)) s" >>"$WORK/$name.txt"
    echo "$rc" >"$WORK/$name.rc"
}

first=${SPECS[0]#*:}
if [ "$TIMING_EPISODES" -gt 0 ]; then
    say "timing: ${first%%:*}, $TIMING_EPISODES tasks alone"
    limit=$(left)
    OMP_NUM_THREADS=$(nproc) plan timing "${first%%:*}" "$TIMING_EPISODES" $((limit < TIMING_S ? limit : TIMING_S))
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
    plan "$name" "$run" "$EPISODES" "$(left)" "${extra[@]}" &
done
wait
failed=0
for spec in "${SPECS[@]}"; do
    name=${spec%%:*}
    { echo "== $name"; tail -n 8 "$WORK/$name.txt"; } >>"$LOG"
    rc=$(cat "$WORK/$name.rc" 2>/dev/null || echo missing)
    [ "$rc" = 0 ] || [ "$rc" = 124 ] || failed=1  # 124: cut off at the deadline, its episode log kept
done
(cd "$WORK" && tar -czf "$OUT/plans.tgz" ./*.txt $(ls ./*.json ./*.jsonl 2>/dev/null))
say "done; outputs in $OUT"
exit $failed
