#!/usr/bin/env bash
# Wheels of this project's dependencies that a PyTorch-only GPU image lacks, for
# bench/gpu-check.sh on a machine that cannot reach a package index: run here (where pip can),
# then carry .whl along. PyTorch, NumPy, PyYAML, prometheus-client and pytest are taken from
# the GPU machine's own Python; the rest of what the gpu check imports is downloaded for it.
#
# Usage: bench/gpu-wheels.sh [PYTHON_VERSION]    (default 3.12: the GPU image's python3)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
rm -rf .whl
python3 -m pip download -q --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    "confluent-kafka>=2.16" "redis>=5" "pydantic>=2.7" "pydantic-settings>=2.3" "orjson>=3.10"
du -sh .whl
