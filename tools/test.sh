#!/usr/bin/env bash
# Set up (with test tools and system packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-env.sh dev
exec .venv/bin/python -m pytest -q -rs "$@"
