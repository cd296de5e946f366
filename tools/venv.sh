#!/usr/bin/env bash
# Create or reuse .venv and install the project into it (editable), with the given extras.
# Reinstalls only when pyproject.toml (or the requested extras) changed since the last install.
#   tools/venv.sh [extra]      e.g. tools/venv.sh test
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extra=${1:-}
venv=$root/.venv
py=${PYTHON:-python3}
# One installer at a time (tests, servers and helpers may start together).
mkdir -p "$root/.venv-lock.d" 2>/dev/null || true
exec 9>"$root/.venv-lock.d/lock"
flock 9
if [[ ! -x $venv/bin/python ]]; then
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Myelin needs Python 3.11 or newer as '$py' (set PYTHON=/path/to/python3.11)." >&2
    exit 69
  fi
  "$py" -m venv "$venv"
fi
stamp=$venv/.myelin-install-${extra:-base}
want=$(sha256sum <"$root/pyproject.toml" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log=$venv/pip-install.log
  echo "installing Myelin${extra:+ with [$extra]} into .venv ..." >&2
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root${extra:+[$extra]}" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "pip install failed; the whole log is in $log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
