#!/bin/sh
# docker-entrypoint.sh: container entrypoint of deploy/compose.yaml (installed in the image as
# /usr/local/bin/calinode-entrypoint). Runs `calinode "$@"` after two optional steps, taken
# only for `start`:
#
# Swarm key: the key file is `--swarm-key FILE` from the arguments, else $CALINODE_SWARM_KEY.
#   If that file is missing: with CALINODE_SWARM_KEY_CREATE=1 it is generated
#   (`calinode keygen --out FILE`); otherwise the script waits for another node to create it.
#
# Bootstrap: with CALINODE_BOOTSTRAP_FROM=/seed/node.json (the seed node's home mounted
#   read-only) and CALINODE_BOOTSTRAP_HOST=node1 (the seed's host name on the compose network),
#   waits for that node.json, resolves the host to an IPv4 address and appends
#   `--bootstrap /ip4/<ip>/tcp/<port>/p2p/<peer id>` (port and peer id from node.json).
#
# Each wait is bounded by CALINODE_WAIT_TIMEOUT seconds (default 60); on timeout the script
# exits 1 and the container's restart policy tries again.
set -eu

log() { printf 'calinode-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

WAIT_TIMEOUT="${CALINODE_WAIT_TIMEOUT:-60}"
case "$WAIT_TIMEOUT" in '' | *[!0-9]*) die "CALINODE_WAIT_TIMEOUT must be a number of seconds" ;; esac

# wait_for_file FILE WHAT: until FILE exists and is not empty.
wait_for_file() {
    waited=0
    while [ ! -s "$1" ]; do
        [ "$waited" -eq 0 ] && log "waiting for $2 ($1), up to ${WAIT_TIMEOUT}s"
        [ "$waited" -ge "$WAIT_TIMEOUT" ] && die "$2 ($1) did not appear within ${WAIT_TIMEOUT}s"
        sleep 1
        waited=$((waited + 1))
    done
}

# resolve_ipv4 HOST: first IPv4 address of HOST, retried for the same bounded time.
resolve_ipv4() {
    waited=0
    while :; do
        addr=$(getent ahostsv4 "$1" 2>/dev/null | awk 'NR == 1 { print $1 }')
        [ -n "$addr" ] && { printf '%s\n' "$addr"; return 0; }
        [ "$waited" -ge "$WAIT_TIMEOUT" ] && die "cannot resolve host '$1' within ${WAIT_TIMEOUT}s"
        sleep 1
        waited=$((waited + 1))
    done
}

[ "$#" -eq 0 ] && set -- start

if [ "$1" = start ]; then
    # 1. Bootstrap address from the seed's node.json (first: once the seed is ready, its swarm
    #    key exists too).
    if [ -n "${CALINODE_BOOTSTRAP_FROM:-}" ]; then
        seed_host="${CALINODE_BOOTSTRAP_HOST:-}"
        [ -n "$seed_host" ] || die "CALINODE_BOOTSTRAP_FROM is set but CALINODE_BOOTSTRAP_HOST is not"
        wait_for_file "$CALINODE_BOOTSTRAP_FROM" "the seed node's node.json"
        # Prints "<peer id> <tcp port>" from node.json (port of the first /tcp/ address).
        seed=$(python3 - "$CALINODE_BOOTSTRAP_FROM" <<'EOF'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    info = json.load(f)
port = "7411"
for addr in info.get("addrs", []):
    parts = addr.split("/")
    if "tcp" in parts:
        port = parts[parts.index("tcp") + 1]
        break
print(info["peer_id"], port)
EOF
        ) || die "cannot read peer id and port from $CALINODE_BOOTSTRAP_FROM"
        seed_peer=${seed% *}
        seed_port=${seed#* }
        seed_ip=$(resolve_ipv4 "$seed_host")
        bootstrap="/ip4/$seed_ip/tcp/$seed_port/p2p/$seed_peer"
        log "bootstrap: $bootstrap"
        set -- "$@" --bootstrap "$bootstrap"
    fi

    # 2. Swarm key.
    key="${CALINODE_SWARM_KEY:-}"
    prev=""
    for arg in "$@"; do
        [ "$prev" = --swarm-key ] && key="$arg"
        case "$arg" in --swarm-key=*) key="${arg#--swarm-key=}" ;; esac
        prev="$arg"
    done
    if [ -n "$key" ] && [ ! -s "$key" ]; then
        if [ "${CALINODE_SWARM_KEY_CREATE:-0}" = 1 ]; then
            log "generating swarm key $key"
            calinode keygen --out "$key"
        else
            wait_for_file "$key" "the swarm key"
        fi
    fi
fi

exec calinode "$@"
