#!/usr/bin/env bash
# Set up (idempotent: Debian packages, venv, extras incl. ray, vLLM's CPU engine in .venv-vllm) and run the tests.
# Default: every test but the `slow` ones (12-30 min on 2 cores, by the CPU's matmul speed and the host's load); extra arguments go to pytest, so
# `bash scripts/test.sh -m slow` runs the slow ones (real vLLM server, two training processes, paper-mini).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system.sh
EXTRAS=train,dev,ray,serve bash scripts/setup.sh
bash scripts/vllm.sh
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
