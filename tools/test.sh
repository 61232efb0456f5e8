#!/usr/bin/env bash
# Set up (with test tools and system packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-env.sh dev
# Keep pytest's rewritten test modules as bytecode between runs (some machines set
# PYTHONDONTWRITEBYTECODE): collection then takes half the CPU time.
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python -m pytest -q -rs "$@"
