#!/usr/bin/env bash
# Build an mmcv 2.1.0 wheel with compiled ops from the PyPI sdist.
#
#   build_mmcv.sh PYTHON OUT_DIR WITH_CUDA(0|1) [ARCH e.g. 9.0]
#
# No prebuilt mmcv 2.1.0 wheel exists for current torch, and mmdet 3.3.0 needs
# mmcv < 2.2. Two things stop a plain `pip install mmcv==2.1.0`:
#   * its setup.py imports pkg_resources, gone from setuptools >= 70, and must
#     build against the installed torch (hence --no-build-isolation);
#   * it hard-codes -std=c++17, while torch >= 2.10 headers need C++20.
set -euo pipefail
PY="$1"; OUT="$2"; WITH_CUDA="${3:-0}"; ARCH="${4:--}"
say() { printf '\033[1m[build_mmcv]\033[0m %s\n' "$*"; }

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

say "installing build tools (requirements/build.txt)"
"${PY}" -m pip install -q -r "$(dirname "$0")/../../requirements/build.txt" 2>&1 |
    grep -v '^WARNING: Location\|dependency conflicts\|requires setuptools' || true

say "downloading the mmcv 2.1.0 source distribution"
"${PY}" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    mmcv==2.1.0 -d "${WORK}" 2>&1 | grep -v '^WARNING: Location' || true
tar -xzf "${WORK}"/mmcv-2.1.0.tar.gz -C "${WORK}"
SRC="${WORK}/mmcv-2.1.0"

TORCH_INC="$("${PY}" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
if grep -qs 'C++20' "${TORCH_INC}/ATen/ATen.h"; then
    say "this torch needs C++20: raising mmcv's -std flags from c++17"
    sed -i 's/std=c++17/std=c++20/g; s/std:c++17/std:c++20/g' "${SRC}/setup.py"
fi

export MMCV_WITH_OPS=1
JOBS="${MAX_JOBS:-$(nproc)}"
export MAX_JOBS="${JOBS}"
if [[ "${WITH_CUDA}" == 1 ]]; then
    export FORCE_CUDA=1
    [[ "${ARCH}" != - ]] && export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${ARCH}}"
    say "building mmcv 2.1.0 with CUDA ops (arch ${TORCH_CUDA_ARCH_LIST:-default}, ${JOBS} jobs)"
else
    say "building mmcv 2.1.0 with CPU ops (no GPU+nvcc found), ${JOBS} jobs"
fi
say "this compiles ~300 C++ files: about 23 minutes on 2 cores (once; the wheel is cached in ${OUT})"
start=$(date +%s)
"${PY}" -m pip wheel -q --no-build-isolation --no-deps -w "${OUT}" "${SRC}"
say "mmcv wheel built in $(( $(date +%s) - start )) s: $(ls "${OUT}"/mmcv-2.1.0-*.whl)"
