#!/usr/bin/env bash
# Device check: one command, at most 8 minutes, that measures speedpose on a CUDA GPU and writes every figure into
# OUT_DIR/device_check.json (default OUT_DIR: device-check/), with a short summary on stdout.
#
#     bash tools/device_check.sh [OUT_DIR]            # from the repository root (any cwd works)
#     PYTHON=/path/to/python bash tools/device_check.sh  # default: .venv/bin/python, else python3
#     DEVICE_CHECK_DRY_RUN=1 bash tools/device_check.sh  # the CUDA path's commands, recorded but not run
#
# Each part runs under its own time limit (timeout) and is recorded as ok, failed (with the end of its log) or
# skipped (with why); a failing part does not stop the others.  A global deadline (DEVICE_CHECK_BUDGET_S, default
# 450 s for the parts) shortens or skips the last parts, so that the whole stays under 8 minutes.  Parts, in the
# order they run on a CUDA machine, with their time limits:
#
#   env                 60 s  python/torch/torchvision/timm/e3nn versions, CUDA device, capability, memory, CUDA,
#                             cuDNN and NCCL versions, bf16 support, nvidia-smi, CPUs, RAM, git commit
#   i2s_inference       60 s  tools/bench_i2s_inference.py on the GPU: level-5 coarse-to-fine mode search, agreement
#                             with the dense level-5 argmax on 200 distributions, dense level-4 baseline
#   i2s_train_resnet50  60 s  tools/bench_i2s_train.py on the GPU: the training step of configs/speedplus.yaml's
#                             network (ResNet-50 + I2S head, 224 px, batch 64): fp32, channels_last and autocast
#                             variants (bf16 autocast)
#   gpu_tests          120 s  pytest -m gpu (tests/test_cuda.py): I2S decoding and the crop pipeline's inference
#                             on the GPU against the CPU, bf16 and fp16 training of the crop pipeline on the GPU
#   nccl                45 s  torchrun, 1 process: an NCCL process group (init with device_id, all_reduce,
#                             broadcast, barrier); the engine itself only creates a group for 2+ processes
#   standin            150 s  tools/bench_learning.py --prepare-only: render and preprocess the small stand-in
#                             (300 train, 100 validation, 50+50 test frames, 10,000 96 px crops) into OUT_DIR
#   ddp                 75 s  torchrun --standalone --nproc-per-node 1 -m speedpose train (standin_cpu, 30 steps on
#                             CUDA): summary.json (world size, precision, steps, stop reason), samples/s
#   speedplus_engine    75 s  speedpose train with configs/speedplus.yaml (random init) on the stand-in, 40 steps:
#                             the real config's step through the engine (bf16, data loading included), samples/s
#   learning      up to 240 s  tools/bench_learning.py (standin_cpu as shipped, bf16 on CUDA): the learning curve
#                             for the time left (1 to 2.5 minutes of training, about 2 when the parts before take
#                             their usual time; 100 s are kept for set-up, validations and the final evaluation)
#
# Planned total: about 7.5 minutes (the learning part takes what the others leave).  Measured on one H200 (16 cores,
# commit c07c5ca, before gpu_tests existed): 358 s for the parts, the learning part 189 s of it; gpu_tests adds
# about a minute and a half, taken from the learning part.
# Parts that need the stand-in are skipped when it could not be rendered.  Between runs into the same OUT_DIR the
# stand-in is kept (a second run skips most of the rendering); runs/, learning/, parts/ and logs/ are replaced.
#
# Without CUDA it says so, runs env and a short CPU sanity part (cpu_i2s_inference: level 4, one thread, about
# 10 s), marks the GPU parts skipped ("no CUDA device") and exits 0.  Exit status: 0 when no part failed, 1 when
# one did (the JSON is written either way), 2 when the JSON could not be assembled.
set -u

START_EPOCH=$(date +%s)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_ARG="${1:-device-check}"
mkdir -p "$OUT_ARG" || { echo "cannot create $OUT_ARG" >&2; exit 2; }
OUT="$(cd "$OUT_ARG" && pwd)"
if [ "$OUT" = "$REPO" ] || [ "$OUT" = "/" ] || [ "$OUT" = "${HOME:-/}" ] || [ -e "$OUT/.git" ]; then
    echo "OUT_DIR must be a folder of its own (the check replaces its runs/, learning/, parts/ and logs/): $OUT" >&2
    exit 2
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="python3"; fi
elif [[ "$PY" == */* && "$PY" != /* ]]; then
    PY="$(pwd)/$PY"  # a relative path is relative to the caller's directory
fi
cd "$REPO" || exit 2
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

BUDGET_S="${DEVICE_CHECK_BUDGET_S:-450}"  # seconds for all parts; assembling the JSON and kill grace come on top
DRY_RUN="${DEVICE_CHECK_DRY_RUN:-0}"
KILL_GRACE_S=10                          # timeout -k: SIGKILL this long after SIGTERM
MIN_PART_S=15                            # a part with less time than this left is skipped
CORES="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 4)"  # nproc obeys OMP_*
WORKERS=$(( CORES >= 16 ? 8 : (CORES > 2 ? CORES / 2 : 1) ))

# the stand-in (small: rendering takes about a minute on 16 cores)
STANDIN="$OUT/standin"
PREP="$OUT/standin-prep"                 # bench_learning.py preprocesses <root> into <root>-prep
STANDIN_SIZES=(--frames 300 --val 100 --test 50 --crops 10000)
LEARN_OVERRIDES=(train.device=cuda train.amp=bf16 "train.workers=$WORKERS")
LEARN_OVERHEAD_S=100                     # set-up, validations and final evaluation around the training minutes

mkdir -p "$OUT/parts" "$OUT/logs" || exit 2
rm -rf "$OUT/parts/"* "$OUT/logs/"* "$OUT/runs" "$OUT/learning" "$OUT/device_check.json"  # not the stand-in
for f in env cpu_i2s_inference i2s_inference i2s_train_resnet50 nccl; do rm -f "$OUT/$f.json"; done
echo "$START_EPOCH" > "$OUT/parts/started"
echo "$BUDGET_S" > "$OUT/parts/budget"

left_s() { echo $(( BUDGET_S - ($(date +%s) - START_EPOCH) )); }

record() {  # record NAME STATUS RC WALL LIMIT REASON
    echo "$2 $3 $4 $5" > "$OUT/parts/$1.status"
    [ -n "$6" ] && printf '%s\n' "$6" > "$OUT/parts/$1.reason"
    return 0
}

skip_part() {  # skip_part NAME REASON
    record "$1" skipped - - - "$2"
    printf '[%-19s] skipped: %s\n' "$1" "$2"
}

run_part() {  # run_part NAME LIMIT_S COMMAND...  (the log goes to logs/NAME.log)
    local name="$1" limit="$2" left t0 rc wall reason=""
    shift 2
    printf '%q ' "$@" > "$OUT/parts/$name.cmd"
    left=$(left_s)
    (( limit > left )) && limit=$left
    if (( limit < MIN_PART_S )); then
        skip_part "$name" "time budget of the check spent (${left} s of ${BUDGET_S} s left)"
        return 1
    fi
    if [ "$DRY_RUN" = 1 ] && [ "$name" != env ]; then
        skip_part "$name" "dry run (limit ${limit} s)"
        return 1
    fi
    printf '[%-19s] running (limit %d s, log %s)\n' "$name" "$limit" "$OUT/logs/$name.log"
    t0=$(date +%s)
    # in the background and waited for, so that Ctrl-C reaches the trap below at once (timeout runs the part in
    # a process group of its own, which the terminal's SIGINT does not reach)
    timeout -k "$KILL_GRACE_S" "$limit" "$@" > "$OUT/logs/$name.log" 2>&1 < /dev/null &
    CHILD=$! CURRENT_PART="$name" CURRENT_T0=$t0 CURRENT_LIMIT=$limit
    wait "$CHILD"
    rc=$?
    CHILD="" CURRENT_PART=""
    wall=$(( $(date +%s) - t0 ))
    if (( rc == 0 )); then
        record "$name" ok 0 "$wall" "$limit" ""
        printf '[%-19s] ok in %d s\n' "$name" "$wall"
        return 0
    fi
    reason="exit code $rc"
    (( rc == 124 || rc == 137 )) && reason="timed out after $limit s (exit code $rc)"
    record "$name" failed "$rc" "$wall" "$limit" "$reason"
    printf '[%-19s] FAILED in %d s: %s (log: %s)\n' "$name" "$wall" "$reason" "$OUT/logs/$name.log"
    tail -n 5 "$OUT/logs/$name.log" | tr '\r' '\n' | tail -n 5 | sed 's/^/    | /'
    return 1
}

CHILD="" CURRENT_PART="" CURRENT_T0=0 CURRENT_LIMIT=0
on_signal() {  # Ctrl-C / SIGTERM: stop the running part (timeout passes the signal on), record it, write the JSON
    trap - INT TERM
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2> /dev/null
        wait "$CHILD" 2> /dev/null
        record "$CURRENT_PART" failed 130 $(( $(date +%s) - CURRENT_T0 )) "$CURRENT_LIMIT" "interrupted"
    fi
    echo "interrupted: writing what was measured so far" >&2
    "$PY" tools/device_check_report.py assemble "$OUT"
    exit 130
}
trap on_signal INT TERM

echo "speedpose device check -> $OUT (python: $PY, $CORES cores, budget $BUDGET_S s)"

# 1. environment (always)
run_part env 60 "$PY" tools/device_check_report.py env "$OUT/env.json"

if [ "$DRY_RUN" = 1 ]; then
    HAVE_CUDA=1
elif timeout 60 "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1; then
    HAVE_CUDA=1
else
    HAVE_CUDA=0
fi

GPU_PARTS=(i2s_inference i2s_train_resnet50 gpu_tests nccl standin ddp speedplus_engine learning)
if (( HAVE_CUDA == 0 )); then
    echo "no CUDA device here (torch.cuda.is_available() is False): running the CPU parts only"
    echo "cpu" > "$OUT/parts/mode"
    run_part cpu_i2s_inference 60 env OMP_NUM_THREADS=1 "$PY" tools/bench_i2s_inference.py --device cpu --threads 1 \
        --level 4 --repeats 2 --n-agree 20 --skip-dense --out "$OUT/cpu_i2s_inference.json"
    for p in "${GPU_PARTS[@]}"; do skip_part "$p" "no CUDA device"; done
else
    echo "cuda" > "$OUT/parts/mode"
    [ "$DRY_RUN" = 1 ] && echo "dry run: recording the CUDA path's commands without running them"
    skip_part cpu_i2s_inference "CUDA device present (the GPU parts run instead)"

    # 4. I2S inference at level 5 on the GPU
    run_part i2s_inference 60 "$PY" tools/bench_i2s_inference.py --device cuda --threads 4 --level 5 --repeats 5 \
        --n-agree 200 --out "$OUT/i2s_inference.json"

    # 5a. the training step of configs/speedplus.yaml's network (ResNet-50 + I2S head at 224 px, batch 64)
    run_part i2s_train_resnet50 60 "$PY" tools/bench_i2s_train.py --device cuda --threads 4 --encoder resnet50 \
        --batch 64 --rounds 5 --variants fp32,channels_last,bf16,bf16_cl --out "$OUT/i2s_train_resnet50.json"

    # 5c. the GPU tests (their own tiny stand-in, rendered by the session fixtures)
    if "$PY" -c 'import pytest' > /dev/null 2>&1 || [ "$DRY_RUN" = 1 ]; then
        run_part gpu_tests 120 "$PY" -m pytest -m gpu tests/test_cuda.py -q -p no:cacheprovider -rfEs
    else
        skip_part gpu_tests "pytest is not installed for $PY (pip install -e '.[test]')"
    fi

    # 3a. NCCL in a torchrun process group of one
    run_part nccl 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 \
        tools/device_check_report.py nccl "$OUT/nccl.json"

    # 2a. the stand-in, rendered once into OUT_DIR (kept between runs of the check; resumable)
    STANDIN_STATE=failed
    if ! grep -q -- "--prepare-only" tools/bench_learning.py; then
        STANDIN_STATE=absent
        skip_part standin "tools/bench_learning.py has no --prepare-only (the learning part renders the stand-in)"
    elif run_part standin 150 "$PY" tools/bench_learning.py --config standin_cpu --data "$STANDIN" \
            "${STANDIN_SIZES[@]}" --prepare-only || [ "$DRY_RUN" = 1 ]; then
        STANDIN_STATE=ready
    fi
    if [ "$STANDIN_STATE" = ready ]; then
        # 3. single-GPU torchrun of the engine (no process group for one process: see the nccl part)
        run_part ddp 75 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m speedpose train \
            --root "$STANDIN" --config standin_cpu --out "$OUT/runs" --name ddp train.max_steps=30 \
            train.device=cuda "data.prep_dir=$PREP" "train.workers=$WORKERS" train.log_every_steps=10
        # 5b. configs/speedplus.yaml through the engine (random init: no ImageNet file needed; no validation)
        run_part speedplus_engine 75 "$PY" -m speedpose train --root "$STANDIN" --config speedplus \
            --out "$OUT/runs" --name speedplus model.pretrained=false train.device=cuda train.amp=bf16 \
            train.max_steps=40 train.log_every_steps=10 train.epochs=1000 train.val_every_epochs=1000 \
            "train.workers=$WORKERS" "data.prep_dir=$PREP"
    else
        skip_part ddp "the stand-in is not ready (see the standin part)"
        skip_part speedplus_engine "the stand-in is not ready (see the standin part)"
    fi

    # 2. the learning curve, for the time left (between 1 and 2.5 minutes of training)
    left=$(( $(left_s) - KILL_GRACE_S ))
    tenths=$(( (left - LEARN_OVERHEAD_S) / 6 ))
    (( tenths > 25 )) && tenths=25
    (( tenths < 10 )) && tenths=10
    minutes="$(( tenths / 10 )).$(( tenths % 10 ))"
    every="$(awk -v m="$minutes" 'BEGIN { printf "%.2f", m / 4 }')"
    echo "$minutes" > "$OUT/parts/learning.minutes"
    if [ "$STANDIN_STATE" = failed ]; then
        skip_part learning "the stand-in is not ready (see the standin part)"
    elif (( left < 60 + LEARN_OVERHEAD_S )) && [ "$DRY_RUN" != 1 ]; then
        skip_part learning "not enough time left for a learning curve (${left} s)"
    else
        run_part learning 240 "$PY" tools/bench_learning.py --config standin_cpu --minutes "$minutes" \
            --every "$every" --name gpu --out "$OUT/learning" --data "$STANDIN" "${STANDIN_SIZES[@]}" \
            "${LEARN_OVERRIDES[@]}"
    fi
fi

"$PY" tools/device_check_report.py assemble "$OUT"
rc=$?
if [ ! -s "$OUT/device_check.json" ]; then
    echo "could not assemble $OUT/device_check.json (exit code $rc)" >&2
    exit 2
fi
exit "$rc"
