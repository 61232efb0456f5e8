#!/usr/bin/env bash
# The main job: set up, then benchmark a bundled model on this machine with ONNX Runtime and LiteRT side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-env.sh
exec .venv/bin/edgert bench zoo:mobilenet_v2 --backend ort --backend tflite --max-time 5 --json results/quickstart.json "$@"
