#!/usr/bin/env bash
# Set up factor4 in ./.venv from scratch (idempotent). Usage:
#   scripts/setup.sh           the library, CLI and service
#   scripts/setup.sh --test    also the test dependencies
# Needs Python 3.12 (.python-version; pyenv picks it up) and a C compiler for pdqhash.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option $arg (use --test)" >&2; exit 2 ;;
  esac
done

find_python() {
  local candidates=()
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv which python 2>/dev/null || true)")
  fi
  candidates+=(python3.12 python3 python)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY=$(find_python) || { echo "setup.sh: Python 3.12 or newer is needed (pyenv install 3.12)" >&2; exit 1; }
  echo "setup.sh: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi

extras=""
[ "$want_test" = 1 ] && extras="[test]"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras}"
echo "setup.sh: ready (.venv/bin/factor4)"
