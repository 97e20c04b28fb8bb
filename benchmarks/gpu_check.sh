#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and this repository, install what is missing, then measure
# LaSagnA-7B's shapes (random weights) in bf16 and 4-bit and print one table (benchmarks/gpu_check.py says what each
# column is). Under 8 minutes on one H100 with the packages already at hand; the first install adds its downloads.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]          # e.g. --settings bf16,8bit,4bit --images 16
#
# Install: a virtual environment in $GPU_CHECK_VENV (default .venv-gpu). If the machine's python ($PYTHON, default
# python3) already has a CUDA build of torch, the environment sees its packages and keeps that torch; otherwise
# torch==2.13.0 comes from PyPI (its Linux wheel is built with CUDA). The project's other dependencies and the
# quantize extra (bitsandbytes) are installed around it; pip never replaces that torch. Offline, point pip at wheels
# you brought: PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

gpus=$(nvidia-smi -L 2>/dev/null || true)
if ! grep -q '^GPU ' <<<"$gpus"; then
    echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi is missing or lists none): this check needs one;" \
        "nothing was installed or run" >&2
    exit 3
fi
echo "$gpus"

python=${PYTHON:-python3}
venv=${GPU_CHECK_VENV:-.venv-gpu}
has_cuda_torch='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "gpu_check: $python is $("$python" -V 2>&1); lasagna needs Python >= 3.11 (set PYTHON=...)" >&2
    exit 3
fi
if [ ! -x "$venv/bin/python" ]; then
    if "$python" -c "$has_cuda_torch" 2>/dev/null; then
        echo "gpu_check: $venv reuses $python's torch $("$python" -c 'import torch; print(torch.__version__)')"
        "$python" -m venv --system-site-packages "$venv"
        # why: when $python is itself a virtual environment, --system-site-packages reaches only the interpreter's
        # own packages, not that environment's (where the torch is): list its folders after the venv's own
        site_dirs=$("$python" -c 'import site; print("\n".join(site.getsitepackages()))')
        purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "$site_dirs" >"$purelib/gpu-check-machine-packages.pth"
    else
        "$python" -m venv "$venv"
    fi
fi
py=$venv/bin/python
if ! "$py" -c "$has_cuda_torch" 2>/dev/null; then
    echo "gpu_check: installing torch==2.13.0 from PyPI into $venv"
    "$py" -m pip install -q "torch==2.13.0"
    if ! "$py" -c "$has_cuda_torch"; then
        echo "gpu_check: torch $("$py" -c 'import torch; print(torch.__version__)') sees no GPU although" \
            "nvidia-smi does: is the driver older than that torch's CUDA?" >&2
        exit 3
    fi
fi

# The project's dependencies (less torch) and the quantize extra, pinned as pyproject.toml pins them; the torch in
# place is a constraint, so no dependency can swap it. The code itself runs from src/ (no build step).
stamp=$venv/.gpu-check-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    "$py" -c 'import torch; print("torch==" + torch.__version__)' >"$venv/constraints.txt"
    "$py" - >"$venv/requirements.txt" <<'EOF'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["quantize"]:
    if re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() != "torch":
        print(req)
EOF
    echo "gpu_check: installing the dependencies ($(wc -l <"$venv/requirements.txt") pins) into $venv"
    "$py" -m pip install -q -c "$venv/constraints.txt" -r "$venv/requirements.txt"
    touch "$stamp"
fi

PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$py" benchmarks/gpu_check.py "$@"
took=$(($(date +%s) - start))
echo "gpu_check.sh: ${took} s in all (install included)"
if [ "$took" -gt 480 ]; then
    echo "gpu_check.sh: over the 8-minute budget" >&2
fi
