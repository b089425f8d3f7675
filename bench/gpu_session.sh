#!/usr/bin/env bash
# The GPU measurements of one short session on a lent machine, most wanted first, all within
# DEADLINE seconds (default 540): each arm of bench/bench_gpu.py runs under the time still
# left and is skipped when less than MIN_ARM seconds (default 90) remain. The JSON of every
# arm that finished, the device's description and this log are copied to OUT (default
# bench/results).
#
#   PYTHON   the interpreter (default python3); it must import torch with CUDA
#   WHEELS   a folder of wheels the machine lacks (shap, lime, pydantic, ...; made here by
#            bench/gpu_wheels.sh), installed without an index into a private target first
#
# Arms, in order: the 14-process audit (the configuration of the README's figures) eager,
# then compiled; the reference's forward ceiling; the eager audit again with batches closed at
# smaller width jumps (--batch-overhead-tokens 1024: 5 % padding instead of 21 %, 2.7x the
# forward passes, in a CPU run that plans as CUDA); the ceiling compiled; then, with a minute
# left, the CUDA tests (pytest must be importable). Extra bench_gpu.py options for every
# audit arm go in AUDIT_ARGS.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-bench/results}
DEADLINE=${DEADLINE:-540}
MIN_ARM=${MIN_ARM:-90}
AUDIT_ARGS=${AUDIT_ARGS:-}
started=$(date +%s)
mkdir -p "$OUT" bench/results
log="$OUT/gpu_session.log"

if [ -n "${WHEELS:-}" ] && [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/trustdiff-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/trustdiff-site${PYTHONPATH:+:$PYTHONPATH}
fi

if ! "$PYTHON" -c "import torch, shap, lime, trustdiff" 2>"$OUT/import-error.txt"; then
    echo "$PYTHON cannot import what the bench needs:" >&2
    cat "$OUT/import-error.txt" >&2
    exit 2
fi

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} >"$OUT/device.txt" 2>&1

arm() {
    local left=$((DEADLINE - ($(date +%s) - started)))
    if [ "$left" -lt "$MIN_ARM" ]; then
        echo "== skipped (${left} s left): $*"
        return
    fi
    echo "== $* (at most ${left} s)"
    local before
    before=$(ls bench/results/bench_gpu-*.json 2>/dev/null | wc -l)
    # A session of its own, so that its explaining processes go with it when time is up.
    setsid timeout --signal=INT --kill-after=20 "$left" \
        "$PYTHON" bench/bench_gpu.py "$@" >"$OUT/arm.txt" 2>&1 &
    local pid=$! rc
    wait "$pid"
    rc=$?
    pkill -KILL -s "$pid" 2>/dev/null
    grep -v '^  explain' "$OUT/arm.txt"
    rm -f "$OUT/arm.txt"
    echo "== exit $rc after $(($(date +%s) - started)) s"
    if [ "$(ls bench/results/bench_gpu-*.json 2>/dev/null | wc -l)" -gt "$before" ] &&
        [ "$(realpath "$OUT")" != "$(realpath bench/results)" ]; then
        cp "$(ls -t bench/results/bench_gpu-*.json | head -1)" "$OUT"/
    fi
}

{
    # shellcheck disable=SC2086  # AUDIT_ARGS holds several options
    arm --processes 14 --block-instances 4 $AUDIT_ARGS
    # shellcheck disable=SC2086
    arm --processes 14 --block-instances 4 --compile $AUDIT_ARGS
    arm --forward-ceiling
    # shellcheck disable=SC2086
    arm --processes 14 --block-instances 4 --batch-overhead-tokens 1024 $AUDIT_ARGS
    arm --forward-ceiling --compile
    left=$((DEADLINE - ($(date +%s) - started)))
    if [ "$left" -ge 60 ]; then
        echo "== the CUDA tests (at most ${left} s)"
        timeout --kill-after=10 "$left" "$PYTHON" -m pytest -q -p no:cacheprovider \
            tests/engine/test_cuda.py 2>&1 | tail -15
    fi
} 2>&1 | tee "$log"
