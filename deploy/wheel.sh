#!/bin/sh
# usage: deploy/wheel.sh SOURCE DIST
#
# Build calinode's wheel from the source folder SOURCE into DIST and print its path: the one
# place the wheel is built (deploy/install.sh, hence the Dockerfile and CI's fresh-install
# check, and tests/integration/test_wheel.py). PYTHON is the interpreter whose pip builds it
# (default python3); WHEEL_NO_BUILD_ISOLATION=1 builds with that interpreter's setuptools
# instead of an isolated build environment (the test venv has them; saves a few seconds).
set -eu
[ "$#" -eq 2 ] || { echo "usage: $0 SOURCE DIST" >&2; exit 2; }
isolation=""
[ "${WHEEL_NO_BUILD_ISOLATION:-0}" = 1 ] && isolation="--no-build-isolation"
# shellcheck disable=SC2086  # $isolation is one flag or nothing
"${PYTHON:-python3}" -m pip wheel --quiet --no-deps $isolation --wheel-dir "$2" "$1"
set -- "$2"/calinode-*.whl
[ "$#" -eq 1 ] && [ -f "$1" ] || { echo "$0: expected one calinode wheel, found: $*" >&2; exit 1; }
printf '%s\n' "$1"
