#!/usr/bin/env bash
# The GPU path end to end, on one machine with a CUDA device, in under 10 minutes:
#
#   1. the gpu tests (pytest -m gpu: CUDA scores = CPU scores, one pinned host-to-device copy
#      per batch, a batch too large for the device is split, training and retraining on CUDA);
#   2. the scoring micro-benchmark on CUDA (bench/score_bench.py): vectors and 28x28 images,
#      batches 1..16384, float32 and bfloat16;
#   3. the pipeline core on CUDA beside the same core with scoring replaced by a no-op
#      (bench/core_bench.py; no broker, no Redis);
#   4. the worker rows of `ama-stream bench --quick` on CUDA, when a Kafka broker and Redis
#      answer (ama-stream local up, or AMA_BENCH_BOOTSTRAP / AMA_BENCH_REDIS_URL); otherwise
#      the step says it was skipped and why.
#
# Usage: bench/gpu-check.sh [OUT_DIR]    (default: $OUT if set, else ./gpu-check)
#
# Each step's output goes to OUT_DIR (machine.txt, gpu-tests.txt, score-bench.txt,
# core-bench.txt/.json, bench.txt/.json). The exit status is 0 only if every step that ran
# passed. On a machine that has PyTorch but not this project's other dependencies and cannot
# reach a package index, carry wheels in .whl (bench/gpu-wheels.sh makes them): they are
# installed into a private directory first. AMA_GPU_CHECK_DEVICE=cpu runs the same steps on
# the CPU (the gpu tests then skip), to try the script without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
device=${AMA_GPU_CHECK_DEVICE:-cuda}
bootstrap=${AMA_BENCH_BOOTSTRAP:-127.0.0.1:9092}
redis_url=${AMA_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
failed=()

if [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ama-gpu-site .whl/*.whl || { echo "gpu-check: installing .whl failed"; exit 1; }
    export PYTHONPATH=/tmp/ama-gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }
# run NAME SECONDS LOG COMMAND...: the command's output to the terminal and LOG, bounded in time.
run() {
    local name=$1 limit=$2 log=$3
    shift 3
    timeout "$limit" "$@" 2>&1 | tee "$out/$log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "gpu-check: $name failed (exit $rc)"; failed+=("$name"); }
}

step "machine"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: not available"
    "$py" -c 'import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}")'
} 2>&1 | tee "$out/machine.txt"

step "gpu tests"
run "gpu tests" 240 gpu-tests.txt "$py" -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/model/test_gpu.py

step "scoring micro-benchmark"
run "score bench" 180 score-bench.txt "$py" bench/score_bench.py --devices "$device" \
    --seconds 0.6 --max-image-batch 16384

step "pipeline core, scored and no-op"
run "core bench" 120 core-bench.txt "$py" bench/core_bench.py --device "$device" \
    --batch 4096 --seconds 1.5 --json "$out/core-bench.json"

step "worker rows against Kafka and Redis"
if "$py" - "$bootstrap" "$redis_url" >"$out/bench.txt" 2>&1 <<'EOF'
import sys

import redis
from confluent_kafka.admin import AdminClient

try:
    AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=5)
    redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"skipped: no broker at {sys.argv[1]} or no Redis at {sys.argv[2]} ({exc}); "
          "start them with `ama-stream local up` or name them with AMA_BENCH_BOOTSTRAP / "
          "AMA_BENCH_REDIS_URL")
    sys.exit(1)
EOF
then
    run "worker bench" 300 bench.txt "$py" -m streamer.cli bench --quick --no-peers \
        --device "$device" --bootstrap "$bootstrap" --redis-url "$redis_url" \
        --json "$out/bench.json"
else
    tail -n 1 "$out/bench.txt"
fi

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu-check: every step that ran passed; results in $out/"
else
    echo "gpu-check: FAILED: ${failed[*]}; results in $out/"
    exit 1
fi
