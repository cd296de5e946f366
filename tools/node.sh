#!/usr/bin/env bash
# Install the Node packages of the JavaScript client tests (tests/jsclient) with `npm ci`.
# Reinstalls only when package.json or package-lock.json changed since the last install.
#   tools/node.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/tests/jsclient
min_major=20
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "The matrix-js-sdk tests need Node.js $min_major or newer with npm on PATH (node: $(command -v node || echo missing), npm: $(command -v npm || echo missing))." >&2
  exit 69
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if (( major < min_major )); then
  echo "The matrix-js-sdk tests need Node.js $min_major or newer; found $(node --version)." >&2
  exit 69
fi
# One installer at a time (the test run and a test started by hand may overlap).
mkdir -p "$root/.venv-lock.d"
exec 9>"$root/.venv-lock.d/node.lock"
flock 9
stamp=$dir/node_modules/.myelin-npm-stamp
want=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log=$root/.venv-lock.d/npm-install.log
  echo "installing the Node packages of tests/jsclient (npm ci) ..." >&2
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "npm ci failed in tests/jsclient; the whole log is in $log" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" >"$stamp"
fi
