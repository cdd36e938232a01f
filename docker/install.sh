#!/bin/sh
# Installs medssl into a virtual environment: at image build time (docker/Dockerfile.*) or
# anywhere else. torch is installed first and medssl is built without build isolation, so its
# C++ (and, with MEDSSL_BUILD_CUDA=1, CUDA) kernels compile against the torch it runs with;
# nothing is compiled or downloaded at run time. Ends by checking that the kernels load and
# the command starts.
#
#   docker/install.sh SOURCE_DIR VENV_DIR
#
# Environment:
#   MEDSSL_TORCH_SPEC   pip requirements for torch (default "torch==2.14.1 torchvision==0.29.1";
#                       empty: torch is already importable in VENV_DIR, install nothing)
#   MEDSSL_BUILD_CUDA   1: also build the CUDA kernel (needs nvcc and TORCH_CUDA_ARCH_LIST)
#   PYTHON              interpreter for a new VENV_DIR (default python3)
#   MEDSSL_DEPS_ONLY    1: install torch and medssl's dependencies (from SOURCE_DIR's
#                       pyproject.toml), not medssl itself, and stop: the images' layer that a
#                       change to medssl's code does not invalidate
set -eu

SRC=${1:?usage: install.sh SOURCE_DIR VENV_DIR}
VENV=${2:?usage: install.sh SOURCE_DIR VENV_DIR}
TORCH_SPEC=${MEDSSL_TORCH_SPEC-torch==2.14.1 torchvision==0.29.1}

if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check --no-cache-dir"
if [ "${MEDSSL_DEPS_ONLY:-0}" = 1 ]; then
    # shellcheck disable=SC2086  # the spec is a list of requirements
    [ -n "$TORCH_SPEC" ] && $PIP install $TORCH_SPEC "setuptools>=70" wheel ninja
    "$VENV/bin/python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
        "$SRC/pyproject.toml" >"$VENV/medssl-requirements.txt"
    $PIP install -r "$VENV/medssl-requirements.txt"
    exit 0
fi
if [ -n "$TORCH_SPEC" ]; then
    # shellcheck disable=SC2086  # the spec is a list of requirements
    $PIP install $TORCH_SPEC "setuptools>=70" wheel ninja
    $PIP install --no-build-isolation "$SRC"
else
    $PIP install --no-build-isolation --no-deps "$SRC"
fi

# checked from / so that a medssl source tree in the current folder cannot stand in for it
cd /
"$VENV/bin/python" - <<'PY'
import os

import medssl
from medssl.ops.bilateral import functional

print("medssl from", medssl.__file__)
table = functional.dispatch_table()
print("medssl bilateral kernels:", table)
if table.get("cpu") != "op":
    raise SystemExit("the C++ kernel was not built")
if os.environ.get("MEDSSL_BUILD_CUDA") == "1":
    import importlib

    importlib.import_module("medssl.ops.bilateral._C_cuda")  # built, loadable (no GPU needed)
PY
"$VENV/bin/medssl" --version
