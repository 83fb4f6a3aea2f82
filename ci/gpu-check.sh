#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, run the GPU tests, the smoke matrix on every GPU
# backend that is available (torch-cuda, ort-cuda, tensorrt) with --latency at fp32 and tf32, the
# GPU timing fidelity benchmark, and a profile of the decoder layer, plain and with --cuda-graph;
# write every result (database, JSON, logs, summary.txt) to OUT.
#
#   ci/gpu-check.sh OUT
#
# Runs from the tree (PYTHONPATH=.), never `pip install`.  Wheels the machine lacks can be put in
# .whl/ beside the tree: they are installed once into .pylib/ (pip --no-deps --target), which goes
# first on PYTHONPATH.  A backend that is not available is skipped with its reason; without a GPU
# the script says so, skips everything, and exits 0.  Exit status: the worst step's (1: a test
# failed or a new finding; 2: a command could not run).
#
# Environment: PYTHON (default python3); NVIDIA_SMI (default nvidia-smi);
# GPU_CHECK_BACKENDS (default torch-cuda,ort-cuda,tensorrt); GPU_CHECK_TIMING (extra timing
# options for the matrix and the profile, e.g. "--warmup-ms 10 --duration 0.05" for a quick run);
# GPU_CHECK_FIDELITY (options for benchmarks/bench_gpu_fidelity.py, e.g. "--rounds 2 --seconds 0.05").
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: ci/gpu-check.sh OUT" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
PYTHON=${PYTHON:-python3}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
CANDIDATES=${GPU_CHECK_BACKENDS:-torch-cuda,ort-cuda,tensorrt}
read -r -a TIMING <<< "${GPU_CHECK_TIMING:-}"
read -r -a FIDELITY <<< "${GPU_CHECK_FIDELITY:-}"
DECODER_LAYER=decoder-256-128-32x32-k4s2p1
SUMMARY="$OUT/summary.txt"
STATUS=0
cd "$ROOT" || exit 2
: > "$SUMMARY"

note() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

# step NAME LOG COMMAND...: run, keep its output in LOG, note its exit status, keep the worst.
step() {
    local name=$1 log=$2
    shift 2
    "$@" > "$log" 2>&1
    local rc=$?
    note "$name: exit $rc (${log#"$OUT"/})"
    if [ "$rc" -gt "$STATUS" ]; then STATUS=$rc; fi
    return 0
}

finish() {
    note "gpu-check: exit $STATUS"
    exit "$STATUS"
}

note "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $("$PYTHON" --version 2>&1), tree $ROOT"

if ! "$NVIDIA_SMI" -L > "$OUT/gpu.txt" 2>&1; then
    note "GPU missing: '$NVIDIA_SMI -L' failed or is not installed ($(head -n 1 "$OUT/gpu.txt"))"
    note "skipped: the GPU tests, the smoke matrix on $CANDIDATES, the GPU fidelity benchmark, the $DECODER_LAYER profile (they need an NVIDIA GPU)"
    finish
fi
"$NVIDIA_SMI" > "$OUT/nvidia-smi.txt" 2>&1
note "GPU: $(head -n 1 "$OUT/gpu.txt")"

if compgen -G ".whl/*.whl" > /dev/null && [ ! -d .pylib ]; then
    step "install .whl/ into .pylib/" "$OUT/pylib-install.log" "$PYTHON" -m pip install --no-deps --target .pylib .whl/*.whl
fi
export PYTHONPATH="$ROOT/.pylib:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export DEPLOYKIT_ENGINE_CACHE="$OUT/engine-cache"

if ! "$PYTHON" -c "import deploykit.cli, deploykit.conformance.matrix, deploykit.execution.harness" > "$OUT/imports.log" 2>&1; then
    note "deploykit cannot run here: $(tail -n 1 "$OUT/imports.log"); put the missing wheels in .whl/ (README, 'GPU check')"
    STATUS=2
    finish
fi
"$PYTHON" -m deploykit backends > "$OUT/backends.txt" 2>&1

"$PYTHON" - "$CANDIDATES" > "$OUT/gpu-backends.tsv" 2>&1 <<'EOF'
import sys

from deploykit import backends

for name in sys.argv[1].split(","):
    try:
        status = backends.get(name).probe()
    except Exception as error:  # noqa: BLE001 - a backend that does not load is skipped with why
        print(f"{name}\tno\tfailed to load: {' '.join(str(error).split())}")
        continue
    print(f"{name}\t{'yes' if status.available else 'no'}\t{' '.join(status.reason.split())}")
EOF
AVAILABLE=$(awk -F'\t' '$2 == "yes" {print $1}' "$OUT/gpu-backends.tsv" | paste -sd, -)
while IFS=$'\t' read -r name available reason; do
    if [ "$available" != "yes" ]; then note "skipped backend $name: $reason"; fi
done < "$OUT/gpu-backends.tsv"

if [ -z "$AVAILABLE" ]; then
    note "no GPU backend is available although a GPU is present: skipped the GPU tests, the smoke matrix and the profile"
    STATUS=$(( STATUS > 1 ? STATUS : 1 ))
    finish
fi

step "GPU tests (tests/backends/test_gpu.py, tests/backends/test_tensorrt.py -m gpu)" "$OUT/test-gpu.log" \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m gpu tests/backends/test_gpu.py tests/backends/test_tensorrt.py --junitxml "$OUT/test-gpu.xml"
note "  $(tail -n 1 "$OUT/test-gpu.log")"

step "smoke matrix on $AVAILABLE, fp32 and tf32, with latency" "$OUT/smoke.txt" \
    "$PYTHON" -m deploykit conformance run --matrix smoke --backends "$AVAILABLE" --precisions fp32,tf32 --latency \
    "${TIMING[@]}" --db "$OUT/results.db" --json "$OUT/smoke.json"
note "  $(tail -n 1 "$OUT/smoke.txt")"
step "smoke report (Markdown)" "$OUT/report.log" \
    "$PYTHON" -m deploykit conformance report --db "$OUT/results.db" --format md -o "$OUT/smoke.md"

FIDELITY_LOG="$OUT/gpu-fidelity.jsonl"
step "GPU fidelity benchmark (benchmarks/bench_gpu_fidelity.py)" "$FIDELITY_LOG" \
    "$PYTHON" benchmarks/bench_gpu_fidelity.py "${FIDELITY[@]}"
if grep -q '^no GPU' "$FIDELITY_LOG"; then
    note "  $(grep '^no GPU' "$FIDELITY_LOG")"
else
    note "  $(grep -c '"within": true' "$FIDELITY_LOG") checked ratios within 0.95-1.05, $(grep -c '"within": false' "$FIDELITY_LOG") outside"
fi

for precision in fp32 tf32; do
    for mode in plain cuda-graph; do
        name="profile-$precision" graph=() label=""
        if [ "$mode" = cuda-graph ]; then name="$name-cuda-graph" graph=(--cuda-graph) label=" with --cuda-graph"; fi
        step "profile $DECODER_LAYER at $precision$label" "$OUT/$name.txt" \
            "$PYTHON" -m deploykit profile --matrix decoder --config "$DECODER_LAYER" --backends "$AVAILABLE" \
            --precision "$precision" "${graph[@]}" "${TIMING[@]}" --json "$OUT/$name.json"
        cat "$OUT/$name.txt" >> "$SUMMARY"
    done
done
finish
