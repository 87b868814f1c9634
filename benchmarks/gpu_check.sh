#!/usr/bin/env bash
# The speed issue's GPU checks, for the `device` tool (a session has 15 minutes of device
# time, one command at most 10). Measured on an H200 (2026-11-26): tests 100 s, bench 80 s,
# synth 7 s, bair_epoch 36 s, demo 226 s, bench_compile 243 s (compiling); the evaluation
# benchmark (eval) was added after that run. A step is not started when less time is left
# before DEADLINE_S than it needs (NEED below), so a first call with the defaults does
# everything up to the demo (about 480 s) and skips the rest. A session's 15 minutes of device
# time hold one more call of about 6 minutes: either the demo again with the long run (which
# needs a demo of the same call), SKIP="tests bench eval synth bair_epoch bench_compile"
# LONG_S=90, or the compile benchmark alone, SKIP="tests bench eval synth bair_epoch demo".
#
#   make gpu-wheels                                    # here, with PyPI: .gpu/wheels (pymunk, cffi,
#                                                      # pycparser, tfrecord for the GPU image's CPython 3.12)
#   bash benchmarks/gpu_check.sh "$OUT"                # there: device run, carry [".gpu"], timeout_s 600
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/gpu_dry   # the same steps, tiny, on a CPU first
#   SKIP="bench_compile demo" bash benchmarks/gpu_check.sh "$OUT"   # leave steps out (a second call
#                                                      # within the 10-minute limit of one device run)
#   DEMO_EPOCHS=50 SKIP="tests bench eval synth bair_epoch long long_eval bench_compile" \
#       bash benchmarks/gpu_check.sh "$OUT"            # the demo alone, twice the presets' steps
#
# The GPU image has PyTorch but not pymunk (the synthetic world) or tfrecord: they are
# installed from the carried wheels, and vidpred runs from src/ (PYTHONPATH), not installed.
# Steps: machine, CUDA tests (tests/test_cuda.py, tests/test_runtime.py), the training-step
# benchmark (fp32, bf16), the evaluation benchmark (a loop over samples against one batched
# pass), one epoch (600 steps) of the bair-lab preset's model on synthetic data in the BAIR
# layout, the demo (both KL schedules, full size) on the GPU, a longer run of the demo's
# preset on the demo's data (a fresh run: as many epochs as fit in LONG_S seconds at the
# demo's measured rate) whose run folder comes back as long_run.tgz (for planning and
# evaluation on the CPU), and the training-step benchmark in bf16 with torch.compile. Each step's output goes to
# OUT/log.txt (the CUDA tests' and the benchmarks' whole output is short enough to be there);
# the files the device tool brings back (at most 8) are:
#   log.txt  bair_metrics.jsonl  demo.txt  demo_monotonic.json  demo_cyclical.json  demo_grid.png
#   long_eval.json  long_run.tgz (or, with DEMO_EPOCHS other than 25, demo_monotonic.tgz and demo_cyclical.tgz: the
#   demo's run folders; SKIP the long run then: at most 8 files come back, 16 MiB each)
# A failing step is logged with its exit status and the next one runs. Every step is cut off
# at DEADLINE_S seconds after the start (default 540, inside one device call's 600), so that
# what finished still comes back; a step that would start with less time left than it needs
# (a minute, more for the long ones) is skipped.
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"

SKIP=" ${SKIP:-} "
DEADLINE_S=${DEADLINE_S:-540}
LONG_S=${LONG_S:-150}
DEMO_EPOCHS=${DEMO_EPOCHS:-25}  # the presets' 25 epochs (1,000 steps per run); more for a longer demo
START=$(date +%s)

# the least time (s) a step needs, from the H200 run: one that cannot finish is not started
declare -A NEED=([bench_compile]=250 [demo]=$((240 * DEMO_EPOCHS / 25)) [long]=$((LONG_S + 30)))

step() {  # step NAME CMD...: run CMD, its output in $WORK/NAME.txt and appended to the log
    local name=$1 t0 rc need
    shift
    if [[ "$SKIP" == *" $name "* ]]; then
        echo "== $name: skipped (SKIP)" | tee -a "$LOG"
        return 0
    fi
    t0=$(date +%s)
    local left=$((DEADLINE_S - (t0 - START)))
    need=${NEED[$name]:-60}
    ((QUICK == 1)) && need=60
    if ((left < need)); then
        echo "== $name: skipped, ${left} s left of DEADLINE_S=$DEADLINE_S (it needs about $need s)" | tee -a "$LOG"
        return 0
    fi
    echo "== $name: $*" >>"$LOG"
    timeout -s INT -k 10 "$left" "$@" >"$WORK/$name.txt" 2>&1
    rc=$?
    tail -c 6000 "$WORK/$name.txt" >>"$LOG"
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
    return 0
}

if ! $PY -c "import pymunk, tfrecord" 2>/dev/null; then
    if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
        step wheels $PY -m pip install --no-index --no-deps .gpu/wheels/*.whl
    else
        echo "pymunk/tfrecord missing and no .gpu/wheels: run 'make gpu-wheels' and carry .gpu" | tee -a "$LOG"
    fi
fi

step machine bash -c "nvidia-smi || true; nproc; $PY -c 'import torch, platform; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"python\", platform.python_version()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'"

step tests $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_runtime.py

if [ "$QUICK" = 1 ]; then
    BENCH=(--codecs dcgan64 --steps 2 --warmup 1)
    EVAL=(--sequences 2 --samples 2 --repeats 1)
    SYNTH=(--train 24 --validate 4 --test 4 --workers 2)
    EPOCH_STEPS=2
    DEMO=(--quick)
    LONG_S=${LONG_S_QUICK:-10}
    LONG=(train.batch_size=4)
else
    BENCH=(--steps 10 --warmup 3)
    EVAL=()
    SYNTH=(--train 96 --validate 16 --test 16 --workers 8)
    EPOCH_STEPS=600
    DEMO=(--epochs "$DEMO_EPOCHS")
    LONG=()
fi

step bench $PY benchmarks/bench_train_step.py --device "$DEVICE" --amp none bf16 "${BENCH[@]}"
step eval $PY benchmarks/bench_evaluate.py --device "$DEVICE" "${EVAL[@]}"

# One epoch of bair-lab's model (VGG codec, batch 12, 2 -> 10 frames; 600 steps) on synthetic
# sequences written in the BAIR processed layout; the time per step is in metrics.jsonl (seq_per_s).
step synth $PY -m vidpred data synth "$WORK/synth" "${SYNTH[@]}"
step bair_epoch $PY -m vidpred train --config bair-lab --out "$WORK/bair_run" --no-progress \
    "data.root=$WORK/synth" train.epochs=1 "train.steps_per_epoch=$EPOCH_STEPS" "train.device=$DEVICE" train.log_every=50
cp "$WORK/bair_run/metrics.jsonl" "$OUT/bair_metrics.jsonl" 2>/dev/null

step demo $PY -m vidpred demo --out "$WORK/demo" --device "$DEVICE" --no-progress "${DEMO[@]}"
for run in monotonic cyclical; do
    cp "$WORK/demo/runs/$run/eval_test.json" "$OUT/demo_$run.json" 2>/dev/null
done
cp "$WORK/demo/report/monotonic/test_0_grid.png" "$OUT/demo_grid.png" 2>/dev/null
cp "$WORK/demo.txt" "$OUT/demo.txt" 2>/dev/null  # the whole output: stage times, both runs' tables
# the demo's two runs (for planning and pictures on the CPU) when the demo was longer than the
# presets', one file each (a file brought back holds at most 16 MiB; a run is about 10 MB)
if ((DEMO_EPOCHS != 25)); then
    for run in monotonic cyclical; do
        [ -f "$WORK/demo/runs/$run/best.pt" ] && tar -C "$WORK/demo/runs" -czf "$OUT/demo_$run.tgz" \
            "$run/best.pt" "$run/config.yaml" "$run/metrics.jsonl" "$run/eval_test.json" 2>/dev/null
    done
fi

# The longer run: the demo's preset and data, as many whole epochs as LONG_S seconds hold at the
# rate the demo's monotonic run measured (metrics.jsonl seq_per_s, harmonic mean), then the demo's evaluation.
EPOCHS=$($PY - "$WORK/demo" "$LONG_S" 2>>"$LOG" <<'EOF'
import json, sys
from pathlib import Path
demo, seconds = Path(sys.argv[1]), float(sys.argv[2])
rows = [json.loads(line) for line in (demo / "runs/monotonic/metrics.jsonl").read_text().splitlines()]
rates = [r["seq_per_s"] for r in rows if r.get("seq_per_s")]
rate = len(rates) / sum(1 / r for r in rates)  # harmonic mean: sequences over seconds
train = json.loads((demo / "data/synth.json").read_text())["params"]["train"]
print(max(1, int(seconds * rate / train)))
EOF
)
echo "== long: ${EPOCHS:-?} epochs (LONG_S=$LONG_S)" | tee -a "$LOG"
if [ -n "$EPOCHS" ]; then
    step long $PY -m vidpred train --config synth-cpu --out "$WORK/long" --no-progress \
        "data.root=$WORK/demo/data" "train.epochs=$EPOCHS" "train.device=$DEVICE" "${LONG[@]}"
    step long_eval $PY -m vidpred evaluate "$WORK/long" --split test --samples 10 --device "$DEVICE" --no-progress
    cp "$WORK/long/eval_test.json" "$OUT/long_eval.json" 2>/dev/null
    [ -f "$WORK/long/best.pt" ] && tar -C "$WORK" -czf "$OUT/long_run.tgz" long/best.pt long/config.yaml long/metrics.jsonl long/eval_test.json 2>/dev/null
fi

# torch.compile last: on the H200 it took 243 s, most of it compiling, and did not pay.
step bench_compile $PY benchmarks/bench_train_step.py --device "$DEVICE" --amp bf16 --compile on "${BENCH[@]}"
echo "== done after $(($(date +%s) - START)) s; outputs in $OUT" | tee -a "$LOG"
