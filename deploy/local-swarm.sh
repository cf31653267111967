#!/usr/bin/env bash
# local-swarm.sh: run a swarm of N calinode daemons on this machine, show it, stop it.
# See `local-swarm.sh --help`.
set -euo pipefail

PROG=${0##*/}
DEFAULT_DIR="${TMPDIR:-/tmp}/calinode-swarm"
READY_TIMEOUT="${CALINODE_SWARM_TIMEOUT:-30}"
STOP_TIMEOUT="${CALINODE_SWARM_STOP_TIMEOUT:-10}"

# Network-namespace mode: a hub namespace holding the bridge, one namespace per node.
HUB_NS=cn-hub
BRIDGE=cn-br0
NET_PREFIX=10.77.0
NETNS_P2P_PORT=7411
NETNS_API=127.0.0.1:7412
MAX_NODES=253

usage() {
    cat <<EOF
Usage:
  $PROG start  [-n N] [--netns] [--dir DIR] [-- EXTRA_START_ARGS...]
  $PROG stop   [--dir DIR]
  $PROG status [--dir DIR]
  $PROG --help

Runs N calinode daemons on this machine (default N=3, DIR=\${TMPDIR:-/tmp}/calinode-swarm).

start   Node i gets the home DIR/node\$i (log in DIR/node\$i/log, pid in DIR/node\$i/pid).
        Node 1 starts first; once its DIR/node1/node.json exists, nodes 2..N start with
        --bootstrap set to node 1's address. When every node is ready, prints one line per
        node on stdout, tab-separated: index, peer id, p2p address, API address.
        Arguments after -- are passed to every \`calinode start\`.
        Default: every node on 127.0.0.1 with OS-chosen ports (tcp/0, API 127.0.0.1:0).
        --netns (root only): namespace $HUB_NS holds a bridge $BRIDGE; node i runs in namespace
        cn-node\$i (veth into the bridge, address $NET_PREFIX.\$i/24), listening on
        /ip4/$NET_PREFIX.\$i/tcp/$NETNS_P2P_PORT with its API on $NETNS_API inside its namespace:
          ip netns exec cn-node1 calinode status --home DIR/node1
        Nothing is added to the root network namespace. Created namespaces and links are
        recorded in DIR/netns. Only one --netns swarm can run at a time.
stop    SIGTERM to every daemon, SIGKILL to those still alive after ${STOP_TIMEOUT}s; in --netns
        mode, then deletes the namespaces and links recorded in DIR/netns (needs root).
status  One line per node: index, state, pid, peer id, p2p address, API address.
        Exit status 0 when every node runs, 3 otherwise.

Environment:
  CALINODE_BIN                 calinode executable (default: calinode from PATH)
  CALINODE_SWARM_TIMEOUT       seconds to wait for each node's node.json (default 30)
  CALINODE_SWARM_STOP_TIMEOUT  seconds between SIGTERM and SIGKILL (default 10)
  CALINODE_SWARM_KEY           the swarm's key file (default: DIR/swarm.key, created once)
  Other CALINODE_* variables (CALINODE_LOG_LEVEL, ...) reach the daemons;
  CALINODE_HOME, CALINODE_LISTEN, CALINODE_API and CALINODE_BOOTSTRAP are set by this script.
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
info() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Processes

# is_alive PID: the process exists and is not a zombie.
is_alive() {
    local pid=$1 stat
    if [[ -d /proc/$pid ]]; then
        read -r stat <"/proc/$pid/stat" 2>/dev/null || return 1
        stat=${stat##*) }
        [[ ${stat%% *} != Z ]]
    else
        kill -0 "$pid" 2>/dev/null
    fi
}

# group_members PGID: live (non-zombie) processes of process group PGID, one pid a line.
group_members() {
    local pgid=$1 f line rest
    local -a fields
    for f in /proc/[0-9]*/stat; do
        read -r line <"$f" 2>/dev/null || continue
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        # fields: state ppid pgrp ...
        ((${#fields[@]} >= 3)) || continue
        if [[ ${fields[2]} == "$pgid" && ${fields[0]} != Z ]]; then
            f=${f#/proc/}
            printf '%s\n' "${f%/stat}"
        fi
    done
}

# started_before PID FILE: PID's process started no later than FILE (its pid file) was written,
# so it is that process and not a later one that reuses the pid. True when unknown.
started_before() {
    local pid=$1 file=$2 stat btime ticks mtime
    local -a fields
    read -r stat <"/proc/$pid/stat" 2>/dev/null || return 0
    read -r -a fields <<<"${stat##*) }"
    # fields[19] is the start time in clock ticks after boot (field 22 of proc(5)).
    ((${#fields[@]} >= 20)) || return 0
    btime=$(awk '/^btime/ { print $2 }' /proc/stat 2>/dev/null) || return 0
    ticks=$(getconf CLK_TCK 2>/dev/null) || ticks=100
    mtime=$(stat -c %Y "$file" 2>/dev/null) || return 0
    [[ $btime =~ ^[0-9]+$ && $ticks =~ ^[0-9]+$ && $mtime =~ ^[0-9]+$ ]] || return 0
    ((btime + fields[19] / ticks <= mtime + 1))
}

# node_indices: indices of DIR/node* directories, ascending.
node_indices() {
    local d
    for d in "$DIR"/node*; do
        if [[ -d $d && ${d##*/node} =~ ^[0-9]+$ ]]; then
            printf '%s\n' "${d##*/node}"
        fi
    done | sort -n
}

# read_node_json FILE [PREFIX]: "peer_id<TAB>p2p addr<TAB>api<TAB>pid" from a node.json, with
# the first address starting with PREFIX (else the first address), /p2p/<peer id> appended
# when missing. Fails while the file is missing or incomplete.
read_node_json() {
    [[ -s $1 ]] || return 1
    python3 - "$@" <<'EOF'
import json
import sys

path = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else ""
try:
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    peer = str(info["peer_id"])
    addrs = [str(a) for a in info["addrs"]]
    api = str(info["api"])
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(1)
addrs = [a for a in addrs if "/tcp/0/" not in a + "/"]
if not peer or not addrs or api.endswith(":0"):
    sys.exit(1)
addr = next((a for a in addrs if prefix and a.startswith(prefix)), addrs[0])
if "/p2p/" not in addr:
    addr = f"{addr}/p2p/{peer}"
print(peer, addr, api, info.get("pid", ""), sep="\t")
EOF
}

# ---------------------------------------------------------------------------------------------
# Network namespaces

netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"; }

# record KIND NAME...: append to DIR/netns what was just created.
record() { printf '%s\n' "$*" >>"$DIR/netns"; }

netns_setup() {
    local n=$1 i ns
    local -a names=("$HUB_NS")
    for ((i = 1; i <= n; i++)); do names+=("cn-node$i"); done
    for ns in "${names[@]}"; do
        if netns_exists "$ns"; then
            die "network namespace $ns already exists (another --netns swarm?); stop it with" \
                "'$PROG stop --dir DIR' or delete it with 'ip netns del $ns'"
        fi
    done
    : >"$DIR/netns"
    ip netns add "$HUB_NS"
    record netns "$HUB_NS"
    ip -n "$HUB_NS" link set lo up
    ip -n "$HUB_NS" link add "$BRIDGE" type bridge
    record link "$HUB_NS" "$BRIDGE"
    ip -n "$HUB_NS" link set "$BRIDGE" up
    for ((i = 1; i <= n; i++)); do
        ns=cn-node$i
        ip netns add "$ns"
        record netns "$ns"
        # One end (cn-veth$i) in the hub, the other (eth0) directly in the node's namespace.
        ip -n "$HUB_NS" link add "cn-veth$i" type veth peer name eth0 netns "$ns"
        record link "$HUB_NS" "cn-veth$i"
        ip -n "$HUB_NS" link set "cn-veth$i" master "$BRIDGE" up
        ip -n "$ns" addr add "$NET_PREFIX.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

# netns_teardown: delete what DIR/netns records (links first, then namespaces, newest first).
netns_teardown() {
    local file="$DIR/netns" kind ns name failed=0
    [[ -e $file ]] || return 0
    while read -r kind ns name; do
        [[ $kind == link ]] || continue
        netns_exists "$ns" || continue
        if ip -n "$ns" link show "$name" >/dev/null 2>&1; then
            ip -n "$ns" link del "$name" || failed=1
        fi
    done < <(tac "$file")
    while read -r kind ns _; do
        [[ $kind == netns ]] || continue
        if netns_exists "$ns"; then
            ip netns del "$ns" || failed=1
        fi
    done < <(tac "$file")
    if ((failed)); then
        info "could not delete everything listed in $file; kept it"
        return 1
    fi
    rm -f "$file"
    info "deleted the network namespaces of $DIR"
}

# ---------------------------------------------------------------------------------------------
# start

# listen_args INDEX: sets LISTEN_ARGS, the listen and API flags of node INDEX.
listen_args() {
    if ((NETNS)); then
        LISTEN_ARGS=(--listen "/ip4/$NET_PREFIX.$1/tcp/$NETNS_P2P_PORT" --api "$NETNS_API")
    else
        LISTEN_ARGS=(--listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0)
    fi
}

# prefix_of INDEX: sets PREFIX, the address prefix to prefer in node INDEX's node.json.
prefix_of() {
    if ((NETNS)); then PREFIX="/ip4/$NET_PREFIX.$1/"; else PREFIX=/ip4/127.0.0.1/; fi
}

# launch_node INDEX ARGS...: start `calinode start --home DIR/node$INDEX ARGS... EXTRA...` in
# its own session (immune to the terminal's signals; `stop` signals its process group).
launch_node() {
    local i=$1 home="$DIR/node$1" pid
    shift
    local -a cmd=(setsid)
    ((NETNS)) && cmd+=(ip netns exec "cn-node$i")
    cmd+=(env -u CALINODE_HOME -u CALINODE_LISTEN -u CALINODE_API -u CALINODE_BOOTSTRAP
          "$BIN" start --home "$home" "$@" ${EXTRA[@]+"${EXTRA[@]}"})
    mkdir -p "$home"
    chmod 700 "$home"
    rm -f "$home/node.json" "$home/pid"
    printf '# %s\n' "${cmd[*]}" >"$home/log"
    "${cmd[@]}" </dev/null >>"$home/log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$home/pid"
    info "node$i: started, pid $pid, log $home/log"
}

# wait_ready INDEX PREFIX: wait for DIR/node$INDEX/node.json; sets READY to read_node_json's line.
wait_ready() {
    local i=$1 prefix=$2 home="$DIR/node$1" pid deadline=$((SECONDS + READY_TIMEOUT))
    read -r pid <"$home/pid"
    while :; do
        if READY=$(read_node_json "$home/node.json" "$prefix" 2>/dev/null); then
            return 0
        fi
        if ! is_alive "$pid"; then
            info "node$i (pid $pid) exited before writing $home/node.json; end of its log:"
            tail -n 25 "$home/log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            info "node$i (pid $pid) wrote no $home/node.json within ${READY_TIMEOUT}s; end of its log:"
            tail -n 25 "$home/log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

START_OK=0
on_start_exit() {
    ((START_OK)) && return 0
    info "start failed; stopping what was started"
    stop_daemons || true
    ((NETNS)) && { netns_teardown || true; }
    return 0
}

cmd_start() {
    local n=3 i
    NETNS=0
    EXTRA=()
    while (($#)); do
        case $1 in
            -n | --nodes)
                (($# >= 2)) || die "$1 needs a number"
                n=$2
                shift 2
                ;;
            -n*) n=${1#-n}; shift ;;
            --nodes=*) n=${1#*=}; shift ;;
            --netns) NETNS=1; shift ;;
            --dir)
                (($# >= 2)) || die "--dir needs a directory"
                DIR=$2
                shift 2
                ;;
            --dir=*) DIR=${1#*=}; shift ;;
            -h | --help) usage; exit 0 ;;
            --) shift; EXTRA=("$@"); break ;;
            *) die "unknown start option '$1' (see $PROG --help)" ;;
        esac
    done
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_NODES)); then
        die "-n must be a number from 1 to $MAX_NODES, not '$n'"
    fi

    command -v python3 >/dev/null || die "python3 is required (it reads node.json)"
    command -v setsid >/dev/null || die "setsid (util-linux) is required"
    local bin=${CALINODE_BIN:-calinode}
    if [[ $bin == */* ]]; then
        [[ -f $bin && -x $bin ]] || die "CALINODE_BIN=$bin is not an executable file"
        BIN=$(cd "$(dirname "$bin")" && pwd -P)/${bin##*/}
    else
        BIN=$(command -v -- "$bin") \
            || die "'$bin' not found in PATH: install calinode (deploy/install.sh VENV, then put VENV/bin on PATH) or set CALINODE_BIN=/path/to/calinode"
    fi

    if ((NETNS)); then
        ((EUID == 0)) || die "--netns needs root (it creates network namespaces); run: sudo $0 start --netns ..."
        command -v ip >/dev/null || die "--netns needs the 'ip' command (iproute2)"
    fi

    mkdir -p "$DIR" || die "cannot create $DIR"
    DIR=$(cd "$DIR" && pwd -P)
    # every node of the swarm shares one private key (a node listening beyond loopback is
    # private by default, and could not be joined with --bootstrap alone)
    if [[ -z ${CALINODE_SWARM_KEY:-} ]]; then
        [[ -s $DIR/swarm.key ]] || "$BIN" keygen --out "$DIR/swarm.key" >/dev/null \
            || die "cannot write the swarm key $DIR/swarm.key"
        export CALINODE_SWARM_KEY=$DIR/swarm.key
    fi
    for i in $(node_indices); do
        local pid=""
        [[ -s $DIR/node$i/pid ]] && read -r pid <"$DIR/node$i/pid"
        if [[ -n $pid ]] && is_alive "$pid" && started_before "$pid" "$DIR/node$i/pid"; then
            die "node$i of $DIR is still running (pid $pid); run '$PROG stop --dir $DIR' first"
        fi
    done
    [[ -e $DIR/netns ]] && die "$DIR/netns exists (namespaces of an earlier --netns run); run '$PROG stop --dir $DIR' first"

    trap on_start_exit EXIT
    trap 'exit 130' INT TERM HUP
    printf 'nodes=%s\nnetns=%s\n' "$n" "$NETNS" >"$DIR/swarm"

    if ((NETNS)); then
        netns_setup "$n"
        info "network namespaces $HUB_NS, cn-node1..cn-node$n ready ($NET_PREFIX.0/24)"
    fi
    local -a lines=()
    listen_args 1
    launch_node 1 "${LISTEN_ARGS[@]}"
    prefix_of 1
    wait_ready 1 "$PREFIX" || exit 1
    lines+=("1"$'\t'"$READY")
    local bootstrap
    bootstrap=$(cut -f2 <<<"$READY")
    info "node1 ready; bootstrap address $bootstrap"

    for ((i = 2; i <= n; i++)); do
        listen_args "$i"
        launch_node "$i" "${LISTEN_ARGS[@]}" --bootstrap "$bootstrap"
    done
    for ((i = 2; i <= n; i++)); do
        prefix_of "$i"
        wait_ready "$i" "$PREFIX" || exit 1
        lines+=("$i"$'\t'"$READY")
    done

    START_OK=1
    local line
    for line in "${lines[@]}"; do
        # index, peer id, p2p address, API address (drop node.json's pid)
        cut -f1-4 <<<"$line"
    done
    info "$n node(s) ready in $DIR; '$PROG status --dir $DIR' shows them, '$PROG stop --dir $DIR' stops them"
    if ((NETNS)); then
        info "CLI inside a namespace: ip netns exec cn-node1 $BIN status --home $DIR/node1"
    else
        info "CLI: $BIN status --home $DIR/node1"
    fi
}

# ---------------------------------------------------------------------------------------------
# stop

# stop_daemons: SIGTERM the process group of every DIR/node*/pid, SIGKILL after STOP_TIMEOUT.
stop_daemons() {
    local i pid home members
    local -a idx=() pids=()
    for i in $(node_indices); do
        home="$DIR/node$i"
        [[ -s $home/pid ]] || continue
        read -r pid <"$home/pid" || continue
        [[ $pid =~ ^[0-9]+$ ]] || { rm -f "$home/pid"; continue; }
        if is_alive "$pid" && ! started_before "$pid" "$home/pid"; then
            info "node$i: pid $pid is not this node's daemon any more (stale pid file); not signalled"
            rm -f "$home/pid"
            continue
        fi
        members=$(group_members "$pid")
        if [[ -z $members ]] && ! is_alive "$pid"; then
            rm -f "$home/pid"
            continue
        fi
        info "node$i: SIGTERM to pid $pid"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        idx+=("$i")
        pids+=("$pid")
    done
    ((${#pids[@]})) || { info "no daemon running in $DIR"; return 0; }

    local deadline=$((SECONDS + STOP_TIMEOUT)) k left
    while :; do
        left=0
        for k in "${!pids[@]}"; do
            if is_alive "${pids[k]}" || [[ -n $(group_members "${pids[k]}") ]]; then
                left=1
                break
            fi
        done
        ((left)) || break
        ((SECONDS >= deadline)) && break
        sleep 0.2
    done

    local status=0
    for k in "${!pids[@]}"; do
        i=${idx[k]}
        pid=${pids[k]}
        home="$DIR/node$i"
        if is_alive "$pid" || [[ -n $(group_members "$pid") ]]; then
            info "node$i: still alive after ${STOP_TIMEOUT}s; SIGKILL to pid $pid"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            if is_alive "$pid"; then
                info "node$i: pid $pid survived SIGKILL"
                status=1
                continue
            fi
            # It had no chance to clean up.
            rm -f "$home/node.json"
        else
            info "node$i: stopped"
        fi
        rm -f "$home/pid"
    done
    return "$status"
}

# The options of stop and status: --dir DIR (sets DIR) and --help. $1: the command's name.
parse_dir_option() {
    local name=$1
    shift
    while (($#)); do
        case $1 in
            --dir)
                (($# >= 2)) || die "--dir needs a directory"
                DIR=$2
                shift 2
                ;;
            --dir=*) DIR=${1#*=}; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown $name option '$1' (see $PROG --help)" ;;
        esac
    done
}

cmd_stop() {
    parse_dir_option stop "$@"
    if [[ ! -d $DIR ]]; then
        info "nothing to stop: $DIR does not exist"
        return 0
    fi
    DIR=$(cd "$DIR" && pwd -P)
    if [[ -e $DIR/netns ]]; then
        ((EUID == 0)) || die "$DIR was started with --netns: stopping it needs root; run: sudo $0 stop --dir $DIR"
        command -v ip >/dev/null || die "the 'ip' command (iproute2) is needed to delete the namespaces"
    fi
    local status=0
    stop_daemons || status=1
    netns_teardown || status=1
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# status

cmd_status() {
    parse_dir_option status "$@"
    [[ -d $DIR ]] || { info "no swarm in $DIR"; return 3; }
    DIR=$(cd "$DIR" && pwd -P)
    local i pid state fields any=0 all=1 netns=0 n="" indices
    [[ -e $DIR/netns ]] && netns=1
    # The nodes of the last start (DIR/swarm), else every DIR/node* directory.
    [[ -s $DIR/swarm ]] && n=$(sed -n 's/^nodes=//p' "$DIR/swarm")
    if [[ $n =~ ^[0-9]+$ ]]; then indices=$(seq 1 "$n"); else indices=$(node_indices); fi
    for i in $indices; do
        any=1
        pid=""
        [[ -s $DIR/node$i/pid ]] && read -r pid <"$DIR/node$i/pid"
        fields=$'-\t-\t-'
        if [[ -n $pid ]] && is_alive "$pid"; then
            state=running
            if out=$(read_node_json "$DIR/node$i/node.json" 2>/dev/null); then
                fields=$(cut -f1-3 <<<"$out")
            else
                state=starting
                all=0
            fi
        else
            state=stopped
            pid=-
            all=0
        fi
        printf '%s\t%s\t%s\t%s\n' "$i" "$state" "$pid" "$fields"
    done
    ((any)) || { info "no node directories in $DIR"; return 3; }
    ((netns)) && info "network namespaces recorded in $DIR/netns"
    ((all)) && return 0
    return 3
}

# ---------------------------------------------------------------------------------------------

DIR=$DEFAULT_DIR
NETNS=0
EXTRA=()
BIN=""
READY=""
LISTEN_ARGS=()
PREFIX=""
out=""

for value in "$READY_TIMEOUT" "$STOP_TIMEOUT"; do
    [[ $value =~ ^[0-9]+$ ]] \
        || die "CALINODE_SWARM_TIMEOUT and CALINODE_SWARM_STOP_TIMEOUT must be whole seconds"
done

(($#)) || { usage >&2; exit 2; }
command=$1
shift
case $command in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) printf '%s: error: unknown command %s\n\n' "$PROG" "'$command'" >&2; usage >&2; exit 2 ;;
esac
