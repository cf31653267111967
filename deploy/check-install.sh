#!/usr/bin/env bash
# usage: deploy/check-install.sh
#
# CI's fresh-install check (a step of .ci/run): install calinode the way deploy/Dockerfile
# does, into a new virtual environment, and start a node on the default models that embeds and
# generates. It exists because a wheel installed into an empty environment is the one install
# path the test venv (an editable install with every extra) cannot stand in for: in issue 14
# the Docker image, the systemd recipe and `pip install calinode` all installed fine and then
# could not start a node.
#
#   1. the build context: this repository's files less deploy/Dockerfile.dockerignore's
#      patterns, copied to a temporary folder (the Dockerfile's `COPY . /tmp/calinode-src`);
#   2. deploy/install.sh VENV SOURCE, the Dockerfile's install line (a unit test,
#      tests/unit/test_install_recipe.py, checks that both call it the same way);
#   3. `calinode start` on loopback in an empty home (it prepares the default models), then
#      `calinode embed` and `calinode generate` against it, each checked;
#   4. stops the node (SIGTERM, it must exit 0) and removes everything.
#
# Dependencies come from the package index (pip's cache), never from the test venv. Measured on
# 2 cores: the install 178-245 s, the first start (models prepared) 25-43 s, about 5 minutes in
# all with the clean-up (the timings are printed); too long for the pytest suite's budget.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/calinode-check-install.XXXXXX")
node_pid=""
cleanup() {
    if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf 'check-install: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# 1. the Docker build context
t0=$(now)
mkdir "$work/src"
grep -v -e '^#' -e '^[[:space:]]*$' "$root/deploy/Dockerfile.dockerignore" > "$work/ignore"
tar -C "$root" --exclude-from="$work/ignore" -cf - . | tar -C "$work/src" -xf -

# 2. the Dockerfile's install line, into a fresh venv
t=$(now)
"$work/src/deploy/install.sh" "$work/venv" "$work/src"
install_s=$(since "$t")
say "installed in ${install_s} s (fresh venv, dependencies from the package index)"
bin="$work/venv/bin"
# no calinode but the installed wheel: not the source tree, not the test venv's
cd "$work"
unset PYTHONPATH VIRTUAL_ENV
for var in $(env | sed -n 's/^\(CALINODE_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
where=$("$bin/python" -c 'import calinode.node as n; print(n.__file__)')
case "$where" in "$work/venv/"*) ;; *) fail "calinode imported from $where, not the venv" ;; esac

# 3. a node on the defaults
t=$(now)
"$bin/calinode" start --home "$work/home" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 \
    --json > "$work/start.out" 2> "$work/start.err" &
node_pid=$!
for _ in $(seq 600); do  # a safety net: preparing the models takes well under a minute
    grep -q '"ready"' "$work/start.out" 2>/dev/null && break
    kill -0 "$node_pid" 2>/dev/null || { cat "$work/start.err" >&2; fail "calinode start exited"; }
    sleep 1
done
grep -q '"ready"' "$work/start.out" || { cat "$work/start.err" >&2; fail "no ready line in 600 s"; }
start_s=$(since "$t")
say "node ready in ${start_s} s (default models prepared in an empty home)"

embed=$("$bin/calinode" embed --home "$work/home" --json "a fresh install embeds this sentence")
"$bin/python" - "$embed" <<'PY' || fail "embed: $embed"
import json, math, sys
reply = json.loads(sys.argv[1])
vectors = reply["vectors"] if isinstance(reply, dict) else reply
assert len(vectors) == 1 and len(vectors[0]) == 384, reply
assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1) < 1e-3, "not unit length"
PY
say "embed: one 384-dimension unit vector ($(printf '%s' "$embed" | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("model", "?"))'))"

gen=$("$bin/calinode" generate --home "$work/home" --json --max-tokens 16 --temperature 0 \
    "Name one colour of the rainbow.")
"$bin/python" - "$gen" <<'PY' || fail "generate: $gen"
import json, sys
reply = json.loads(sys.argv[1])
assert reply["text"].strip() and reply["usage"]["completion_tokens"] > 0, reply
PY
say "generate: $(printf '%s' "$gen" | "$bin/python" -c 'import json,sys; r=json.load(sys.stdin); print(r.get("model", "?"), repr(r["text"][:60]))')"

# 4. a clean stop
kill -TERM "$node_pid"
status=0
wait "$node_pid" || status=$?
node_pid=""
[ "$status" -eq 0 ] || { cat "$work/start.err" >&2; fail "calinode start exited $status on SIGTERM"; }
say "passed in $(since "$t0") s (install ${install_s} s, start ${start_s} s)"
