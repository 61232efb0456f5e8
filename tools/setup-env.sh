#!/usr/bin/env bash
# Create .venv with edgert and its host extras. With "dev": also test tools and the system
# packages the tests use (sshd, socat, the arm64 cross compiler), when we can apt-get as root.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
if [ "${1:-}" = "dev" ]; then
  extras="all,dev,torch,convert"  # torch: the accuracy experiment, PyTorch references, real-model zoo
  need=""
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need="$need openssh-server"
  command -v socat >/dev/null || need="$need socat"
  command -v aarch64-linux-gnu-g++ >/dev/null || need="$need g++-aarch64-linux-gnu"
  command -v chromium >/dev/null || need="$need chromium"
  command -v qemu-aarch64-static >/dev/null || need="$need qemu-user-static"
  if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    else
      echo "setup: please install:$need (tests that need them will be skipped)" >&2
    fi
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" >.venv/pip.log 2>&1; then
  cat .venv/pip.log >&2
  exit 1
fi
if [[ ",$extras," == *",convert,"* ]]; then  # see the convert extra in pyproject.toml
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "onnx2tf==1.29.24" >>.venv/pip.log 2>&1
fi
.venv/bin/python -c "import edgert" # fail here, not later, if the install broke
