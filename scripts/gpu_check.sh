#!/usr/bin/env bash
# The prepared GPU check (issue 14), for the `device` tool's machine: one NVIDIA GPU, no network, PyTorch
# installed, depthstudy's other dependencies carried as wheels. Writes every number to $OUT/gpu_check.json
# (or ./gpu_check.json) within its --budget (420 s by default; steps that do not fit are recorded as skipped).
#
# Once, here (a machine with pip access), in the repository root:
#   mkdir -p .git/info && echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
#     hydra-core==1.3.2 omegaconf==2.3.0 hydra-joblib-launcher==1.2.0 google-crc32c
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # PyPI has only its sdist: a wheel, built
#                                                                         # here (there, with no index, pip cannot build)
# Then: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=560)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/* || exit 1
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
