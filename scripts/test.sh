#!/usr/bin/env bash
# Set up (idempotent: Debian packages, venv, extras incl. ray) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system.sh
EXTRAS=train,dev,ray bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
