#!/usr/bin/env bash
# Create or complete the project's virtual environment. Idempotent: every step
# first checks whether its result is already there, so a second run only
# verifies. Pins live in requirements/*.txt.
#
#   tools/install/setup_env.sh [VENV]        (default .venv)
#
# Environment knobs:
#   PYTHON=python3.11          interpreter used to create the venv
#   ICAR_WHEEL_CACHE=DIR       where the locally built mmcv wheel is kept
#                              (default ~/.cache/icar_dense/wheels)
#   ICAR_SYSTEM_TORCH=1        create the venv with --system-site-packages so an
#                              existing torch/CUDA install of the base
#                              interpreter is reused (auto when it has torch)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-${ROOT}/.venv}"
PYTHON="${PYTHON:-python3}"
REQ="${ROOT}/requirements"
WHEEL_CACHE="${ICAR_WHEEL_CACHE:-${HOME}/.cache/icar_dense/wheels}"

say() { printf '\033[1m[setup_env]\033[0m %s\n' "$*"; }

# ---------------------------------------------------------------- venv
if [[ ! -x "${VENV}/bin/python" ]]; then
    venv_args=()
    if [[ "${ICAR_SYSTEM_TORCH:-auto}" == 1 ]] || { [[ "${ICAR_SYSTEM_TORCH:-auto}" == auto ]] &&
        "${PYTHON}" -c 'import torch, torchvision' >/dev/null 2>&1; }; then
        say "base interpreter already has torch: reusing it (--system-site-packages)"
        venv_args+=(--system-site-packages)
    fi
    say "creating virtual environment ${VENV}"
    "${PYTHON}" -m venv "${venv_args[@]}" "${VENV}"
    "${VENV}/bin/python" -m pip install -q --upgrade pip 2>&1 |
        grep -v '^WARNING: Location' || true
fi
PY="${VENV}/bin/python"
PIP=("${PY}" -m pip --disable-pip-version-check)

# ---------------------------------------------------------------- torch
if "${PY}" -c 'import torch, torchvision' >/dev/null 2>&1; then
    say "torch present: $("${PY}" -c 'import torch, torchvision; print(torch.__version__, "/ torchvision", torchvision.__version__)') (kept)"
else
    say "installing torch + torchvision (requirements/torch.txt)"
    "${PIP[@]}" install -q -r "${REQ}/torch.txt" 2>&1 |
        grep -v '^WARNING: Location' || true
    "${PY}" -c 'import torch, torchvision' || {
        say "ERROR: torch/torchvision did not install (requirements/torch.txt)"
        exit 1; }
fi

# ---------------------------------------------------------------- mmcv
mmcv_ok() {
    "${PY}" - <<'EOF' >/dev/null 2>&1
import mmcv
assert mmcv.__version__ == '2.1.0', mmcv.__version__
from mmcv.ops import nms, roi_align  # noqa: F401  (compiled ops present)
EOF
}
if mmcv_ok; then
    say "mmcv 2.1.0 with ops present (kept)"
else
    # A wheel compiled against one torch build only works with that build:
    # the cache is keyed by torch version and whether CUDA ops were compiled.
    read -r TORCH_TAG WITH_CUDA ARCH <<<"$("${PY}" - <<'EOF'
import shutil, torch
cuda = torch.cuda.is_available() and shutil.which('nvcc') is not None
arch = ''
if cuda:
    major, minor = torch.cuda.get_device_capability()
    arch = f'{major}.{minor}'
print(torch.__version__.replace('+', '_'), int(cuda), arch or '-')
EOF
)"
    CACHE_DIR="${WHEEL_CACHE}/torch-${TORCH_TAG}-$([[ ${WITH_CUDA} == 1 ]] && echo "cuda${ARCH}" || echo cpu)"
    mkdir -p "${CACHE_DIR}"
    if ! ls "${CACHE_DIR}"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        "${ROOT}/tools/install/build_mmcv.sh" "${PY}" "${CACHE_DIR}" "${WITH_CUDA}" "${ARCH}"
    else
        say "using cached mmcv wheel from ${CACHE_DIR}"
    fi
    # --only-binary: take the cached build, never the sdist; deps from PyPI
    "${PIP[@]}" install -q --find-links "${CACHE_DIR}" --only-binary mmcv \
        mmcv==2.1.0 2>&1 | grep -v '^WARNING: Location' || true
    mmcv_ok || { say "ERROR: mmcv installed but its ops do not import"; exit 1; }
fi

# ---------------------------------------------------------------- the rest
say "installing runtime and test requirements (requirements/runtime.txt, tests.txt)"
# The constraint keeps pip from replacing our mmcv build with another copy.
"${PIP[@]}" install -q -r "${REQ}/runtime.txt" -r "${REQ}/tests.txt" \
    --constraint <(echo "mmcv==2.1.0") 2>&1 | grep -v '^WARNING: Location' || true
"${PY}" -c 'import mmdet, mmseg, mmaction, transformers, lvis, decord' || {
    say "ERROR: a runtime requirement failed to install"; exit 1; }

say "installing icar_dense in editable mode"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "${ROOT}"

"${PY}" - <<'EOF'
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch, mmcv, mmengine, mmdet, mmseg, mmaction, transformers
import icar_dense
print('[setup_env] ready: torch', torch.__version__, '| mmcv', mmcv.__version__,
      '| mmengine', mmengine.__version__, '| mmdet', mmdet.__version__,
      '| mmseg', mmseg.__version__, '| mmaction2', mmaction.__version__,
      '| transformers', transformers.__version__, '| icar_dense',
      icar_dense.__version__)
EOF
