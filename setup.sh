#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install editrobust with its test extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      py="$candidate"; break
    fi
  done
fi
[ -n "$py" ] || { echo "setup.sh: need Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
