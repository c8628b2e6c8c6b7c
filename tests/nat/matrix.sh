#!/usr/bin/env bash
# The NAT matrix with the real binaries: for every ordered pair of NAT types (caller behind
# home1, callee behind home2), plus two devices behind one NAT without hairpinning and a double
# NAT (home behind a carrier-grade NAT), brings the lab up (lab.sh), starts real `peercom node`
# bootstrap nodes (and coturn as a STUN server) in the "internet", runs two `peercom run --board
# sim` devices that know each other's keys only (no addresses: the DHT must find them), waits
# until both have joined and announced, places a call through the control socket (`peercom ctl
# call`, the button press) and measures the time until the caller shows the first remote video
# frame. Needs root, nft and python3.
#
#   tests/nat/matrix.sh                 # table
#   tests/nat/matrix.sh --json          # one JSON document: {"cases": [...], "summary": {...}}
#   tests/nat/matrix.sh --check         # also exit 1 unless the targets of issue 5 hold
#   tests/nat/matrix.sh --only 'symmetric--*'   # only the cases whose name matches (glob)
#
# Environment: PEERCOM_BIN (default target/debug/peercom), MATRIX_OUT (logs, default
# target/nat-matrix), MATRIX_NODES (bootstrap nodes, 1-4, default 2), MATRIX_STUN (0: no coturn),
# MATRIX_CALL_TIMEOUT_S (default 10), MATRIX_JOIN_TIMEOUT_S (default 15), MATRIX_PCAP=1 (tcpdump
# of the internet bridge into each case's directory).
# Every process is stopped and the lab torn down on exit, Ctrl-C included.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
json=0 check=0 only="*"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --json) json=1 ;;
    --check) check=1 ;;
    --only) only="${2:?--only needs a pattern}"; shift ;;
    --only=*) only="${1#--only=}" ;;
    *) echo "usage: $0 [--json] [--check] [--only GLOB]" >&2; exit 2 ;;
    esac
    shift
done

# Our own namespaces (pcn-mx-*): other labs (the self-test, other people's) run beside us.
export LAB_ID="${MATRIX_LAB_ID:-mx}"
# shellcheck source-path=SCRIPTDIR source=lab.sh
source "$here/lab.sh"
LAB_QUIET=1

BIN="${PEERCOM_BIN:-$root/target/debug/peercom}"
OUT="${MATRIX_OUT:-$root/target/nat-matrix}"
NODES="${MATRIX_NODES:-2}"
CALL_TIMEOUT_S="${MATRIX_CALL_TIMEOUT_S:-10}"
JOIN_TIMEOUT_S="${MATRIX_JOIN_TIMEOUT_S:-15}"
# After the first frame, how long a relayed call may take to move to a direct path (a birthday
# punch runs in the background).
SETTLE_S="${MATRIX_SETTLE_S:-5}"
PORT=7600
STUN_PORT=3478
[[ -x "$BIN" ]] || { echo "matrix: $BIN not found (cargo build -p peercom, or set PEERCOM_BIN)" >&2; exit 1; }
[[ $EUID -eq 0 ]] || { echo "matrix: must run as root (network namespaces)" >&2; exit 1; }
[[ "$NODES" =~ ^[1-4]$ ]] || { echo "matrix: MATRIX_NODES must be 1-4" >&2; exit 2; }
STUN="${MATRIX_STUN:-1}"
if [[ "$STUN" == 1 ]] && ! command -v turnserver >/dev/null; then
    echo "matrix: turnserver (coturn) not found: running without a STUN server" >&2
    STUN=0
fi

# Nodes on 198.18.0.2.. (the first NODES server addresses); coturn, when used, on the last one.
SERVERS=("$LAB_SRV1" "$LAB_SRV2" "$LAB_SRV3" "$LAB_SRV4")
NODE_IPS=("${SERVERS[@]:0:NODES}")
STUN_IP="$LAB_SRV4"
# Flags of `peercom node` that this binary has and the matrix wants (e.g. --relay, once there).
NODE_FLAGS=()
if "$BIN" node --help 2>/dev/null | grep -q -- '--relay'; then NODE_FLAGS+=(--relay); fi

tmp="$(mktemp -d /tmp/pcn-matrix.XXXXXX)"   # control sockets (short paths: 108-byte limit)
cleanup() { lab_down; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start="$EPOCHREALTIME"

rm -rf "$OUT"
mkdir -p "$OUT/keys"
results="$OUT/cases.list"   # the result.json of each case, in order
: >"$results"

# --- helpers ---


# ctl SOCK ARGS... : peercom ctl against a device's control socket (a Unix socket: no netns).
ctl() { local s="$1"; shift; "$BIN" ctl --socket "$s" "$@"; }

# status SOCK FILE : the device's status JSON into FILE (empty on failure).
status() { ctl "$1" status >"$2" 2>/dev/null || : >"$2"; }

# now_ms : wall clock in ms (fractional), as the devices report first_remote_frame_unix_ms.
now_ms() {
    local t="$EPOCHREALTIME"
    local s="${t%.*}" us="${t#*.}"
    printf '%d.%03d\n' "$((s * 1000 + 10#$us / 1000))" "$((10#$us % 1000))"
}

# ms_since T0 [T1] : T1 (default now) - T0 in whole ms.
ms_since() { "$PY" -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1])))' "$1" "${2:-$(now_ms)}"; }

# A key per device, made once for the whole run.
keygen() {
    local out
    out="$("$BIN" keygen --out "$OUT/keys/$1.key")"
    sed -n 's/^device ID: //p' <<<"$out"
}
ID_CALLER="$(keygen caller)"
ID_CALLEE="$(keygen callee)"
[[ -n "$ID_CALLER" && -n "$ID_CALLEE" ]] || { echo "matrix: peercom keygen printed no device ID" >&2; exit 1; }

# write_config FILE NAME KEY SOCK PEER_NAME PEER_ID EXTRA : a device's config. The contact has
# its key only (no addr), so the call must find it through the DHT (or LAN beacons).
write_config() {
    local bootstrap="" ip stun=""
    for ip in "${NODE_IPS[@]}"; do bootstrap+="${bootstrap:+, }\"$ip:$PORT\""; done
    [[ "$STUN" == 1 ]] && stun="\"$STUN_IP:$STUN_PORT\""
    cat >"$1" <<EOF
[device]
name = "$2"
key = "$3"
listen = "0.0.0.0:$PORT"
control = "$4"
$7
[network]
bootstrap = [$bootstrap]
stun = [$stun]

[[contact]]
name = "$5"
button = 1
  [[contact.device]]
  key = "$6"
EOF
}

# The bootstrap node's command line, in one place: start_node IP DIR.
start_node() {
    local cmd=("$BIN" node --listen "$1:$PORT" --state "$2/node-$1.state" "${NODE_FLAGS[@]}")
    local i
    for ((i = 0; i < ${#NODE_IPS[@]}; i++)); do
        [[ "${NODE_IPS[i]}" == "$1" ]] || cmd+=(--bootstrap "${NODE_IPS[i]}:$PORT")
    done
    lab_spawn inet "$2/node-$1.log" "${cmd[@]}"
}

start_stun() {
    local d="$1/coturn"
    mkdir -p "$d"
    lab_spawn inet "$1/stun.log" turnserver --stun-only --listening-ip="$STUN_IP" \
        --listening-port="$STUN_PORT" --no-tcp --no-tls --no-dtls --no-cli \
        --pidfile="$d/turnserver.pid" --db="$d/turndb" --log-file=stdout --simple-log
}

# wait_servers TIMEOUT_S : bounded poll until every node (and coturn) has bound its socket.
wait_servers() {
    local i want=$((${#NODE_IPS[@]} + STUN))
    for ((i = 0; i < $1 * 50; i++)); do
        if (($(in_ns inet ss -Hlun "( sport = :$PORT or sport = :$STUN_PORT )" | wc -l) >= want)); then return 0; fi
        sleep 0.02
    done
    echo "matrix: servers not listening after $1 s" >&2
    return 1
}

# joined SOCK LOG : the device has DHT nodes, addresses in its record, and published it.
joined() {
    local f="$tmp/joined.json"
    status "$1" "$f"
    [[ "$(jfile "$f" "d['network']['dht_nodes'] > 0 and len(d['network']['announced']) > 0")" == true ]] &&
        grep -qE 'announced where this device is at [1-9]' "$2"
}

# wait_joined SOCK LOG DEADLINE_EPOCH_S PID : bounded poll; gives up at once if PID exited.
wait_joined() {
    while ((${EPOCHREALTIME%.*} < $3)) && kill -0 "$4" 2>/dev/null; do
        if joined "$1" "$2"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# last log lines, on one line, for a failure reason.
log_tail() { tail -n "${2:-4}" "$1" 2>/dev/null | cut -c1-200 | tr '\n\t' '| ' || true; }

# path_kind ADDR CLASS : lan / direct / relay / other, from the caller's session address, checked
# against the class the device itself reports.
path_kind() {
    local ip="${1%:*}"
    if [[ -z "$1" ]]; then echo ""
    elif [[ "$2" == relay && "$ip" =~ ^198\.18\.0\.[2-5]$ ]]; then echo relay
    elif [[ "$2" == relay ]]; then echo other
    elif [[ -n "$CALLEE_LAN" && "$ip" == "$CALLEE_LAN" ]]; then echo lan
    elif [[ "$ip" == "$CALLEE_PUB" ]]; then echo direct
    elif [[ "$ip" =~ ^198\.18\.0\.[2-5]$ ]]; then echo relay
    else echo other
    fi
}

# record FILE KEY=VALUE... : one case's result as JSON (numbers for *_ms, booleans for
# connected/cone; "" is null); its file name is appended to the run's list of cases. Also from
# the case's files: lookup_ms (press to "located" in the caller's log), the NAT class each
# device worked out and what it announced, and the caller's DHT query timeouts.
record() {
    local f="$1"
    shift
    "$PY" - "$f" "$@" <<'EOF'
import json, os, re, sys
out, kv = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
r = {}
for k, v in kv.items():
    v = " ".join(v.split())
    if v == "":
        r[k] = None
    elif k.endswith("_ms"):
        r[k] = round(float(v))
    elif k in ("connected", "cone"):
        r[k] = v == "true"
    else:
        r[k] = v
d = os.path.dirname(out)

def load(name):
    try:
        return json.load(open(os.path.join(d, name)))
    except (OSError, ValueError):
        return None

def stamp(line):
    m = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) ", line)
    return None if not m else ((int(m[1]) * 60 + int(m[2])) * 60 + int(m[3])) * 1000 + int(m[4])

dial = loc = None
try:
    for line in open(os.path.join(d, "caller.log"), errors="replace"):
        if ": dialing " in line:
            dial, loc = stamp(line), None
        elif ": located " in line and dial is not None and loc is None:
            loc = stamp(line)
except OSError:
    pass
r["lookup_ms"] = (loc - dial) % 86400000 if dial is not None and loc is not None else None
for side in ("caller", "callee"):
    net = (load(side + "-joined.json") or {}).get("network") or {}
    r[side + "_nat"] = net.get("nat")
    r[side + "_announced"] = net.get("announced")
last = (load("caller-last.json") or {}).get("network") or {}
r["caller_dht_timeouts"] = (last.get("dht") or {}).get("timeouts")
json.dump(r, open(out, "w"), indent=1)
EOF
    echo "$f" >>"$results"
}

# why SOCK_CALLER SOCK_CALLEE DIR HEADLINE : a failure's reason: the headline, both call
# states, where the caller located the callee, whether the callee saw the call, log tails.
why() {
    local d="$3" located incoming cs es
    cs="$(jfile "$d/caller-last.json" "d['state'] + (' (last call: ' + d['last_call']['outcome'] + ')' if d.get('last_call') else '')")"
    es="$(jfile "$d/callee-last.json" "d['state']")"
    located="$(grep -o 'located .*' "$d/caller.log" | paste -sd ';' || true)"
    incoming="$(grep -c 'incoming call from' "$d/callee.log" || true)"
    printf '%s; caller %s, callee %s; %s; callee saw %s incoming call(s); caller log: %s; callee log: %s' \
        "$4" "${cs:-gone}" "${es:-gone}" "${located:-callee not located}" "${incoming:-0}" \
        "$(log_tail "$d/caller.log" 2)" "$(log_tail "$d/callee.log" 2)"
}

# run_case NAME CALLER_TYPE CALLEE_TYPE CONE LAB_ARGS... : one call, recorded in $results.
run_case() {
    local name="$1" t1="$2" t2="$3" cone="$4"
    shift 4
    # shellcheck disable=SC2053  # a glob on purpose
    [[ "$name" == $only ]] || return 0
    local d="$OUT/$name" s1="$tmp/$name.caller.sock" s2="$tmp/$name.callee.sock" ip callee_ns=dev2 p1 p2
    local t0="" t_in="" first="" addr="" addr2="" class="" kind="" final="" direct_ms="" settle reason="" connected=false deadline st
    mkdir -p "$d"
    [[ "$name" == same-nat ]] && callee_ns=dev1b
    if ! lab_up "$@" 2>"$d/lab.err"; then
        record "$d/result.json" case="$name" caller="$t1" callee="$t2" cone="$cone" connected=false \
            reason="lab_up failed: $(log_tail "$d/lab.err")"
        lab_down
        return 0
    fi
    lab_env >"$d/lab.env"
    if [[ "$callee_ns" == dev1b ]]; then
        CALLEE_LAN="$LAB_DEV1B" CALLEE_PUB="$LAB_PUB1"
    else
        CALLEE_LAN="" CALLEE_PUB="$LAB_PUB2"
    fi
    if [[ "${MATRIX_PCAP:-0}" == 1 ]]; then
        # Everything on the internet bridge, for debugging (tcpdump -r inet.pcap -n).
        lab_spawn inet "$d/tcpdump.log" tcpdump -i br0 -n -U -w "$d/inet.pcap" udp
        lab_wait_file "$d/tcpdump.log" 'listening on' 5 || true
    fi
    for ip in "${NODE_IPS[@]}"; do start_node "$ip" "$d"; done
    [[ "$STUN" == 1 ]] && start_stun "$d"
    wait_servers 5 2>>"$d/lab.err" || true
    write_config "$d/caller.toml" Caller "$OUT/keys/caller.key" "$s1" Callee "$ID_CALLEE" ""
    write_config "$d/callee.toml" Callee "$OUT/keys/callee.key" "$s2" Caller "$ID_CALLER" \
        $'\n[call]\nauto_answer = true\n'
    lab_spawn dev1 "$d/caller.log" "$BIN" run --config "$d/caller.toml" --board sim
    p1="$LAB_LAST_PID"
    lab_spawn "$callee_ns" "$d/callee.log" "$BIN" run --config "$d/callee.toml" --board sim
    p2="$LAB_LAST_PID"

    deadline=$((${EPOCHREALTIME%.*} + JOIN_TIMEOUT_S))
    if ! wait_joined "$s1" "$d/caller.log" "$deadline" "$p1"; then
        reason="caller did not join the DHT in ${JOIN_TIMEOUT_S}s"
    elif ! wait_joined "$s2" "$d/callee.log" "$deadline" "$p2"; then
        reason="callee did not join the DHT in ${JOIN_TIMEOUT_S}s"
    fi
    kill -0 "$p2" 2>/dev/null || reason="the callee exited"
    kill -0 "$p1" 2>/dev/null || reason="the caller exited"
    status "$s1" "$d/caller-joined.json"
    status "$s2" "$d/callee-joined.json"
    if [[ -z "$reason" && "$(jfile "$d/caller-joined.json" "'first_remote_frame_unix_ms' in d and 'path' in d['network']")" != true ]]; then
        reason="$BIN reports no path / first_remote_frame_unix_ms in its status (an older build?)"
    fi

    if [[ -z "$reason" ]]; then
        # The button press, then in-call (a blocking wait, no polling), then the first frame.
        t0="$(now_ms)"
        if ! ctl "$s1" call Callee >"$d/call.out" 2>&1; then
            reason="ctl call failed: $(log_tail "$d/call.out")"
        elif ! ctl "$s1" wait in-call --timeout-ms "$((CALL_TIMEOUT_S * 1000))" >"$d/wait.out" 2>&1; then
            reason="not in call after ${CALL_TIMEOUT_S}s"
        else
            t_in="$(ms_since "$t0")"
            deadline=$((${t0%.*} / 1000 + CALL_TIMEOUT_S + 1))
            while :; do
                status "$s1" "$d/caller-call.json"
                st="$(jfile "$d/caller-call.json" "d['state']")"
                first="$(jfile "$d/caller-call.json" "d['first_remote_frame_unix_ms']")"
                addr="$(jfile "$d/caller-call.json" "d['network']['path']['addr']")"
                class="$(jfile "$d/caller-call.json" "d['network']['path']['class']")"
                [[ -n "$first" ]] && break
                if [[ "$st" != in-call ]]; then
                    reason="call ended before the first remote frame"
                    break
                fi
                if ((${EPOCHREALTIME%.*} >= deadline)); then
                    reason="in call but no remote frame after ${CALL_TIMEOUT_S}s"
                    break
                fi
                sleep 0.1
            done
            status "$s2" "$d/callee-call.json"
            addr2="$(jfile "$d/callee-call.json" "d['network']['path']['addr']")"
        fi
    fi
    status "$s1" "$d/caller-last.json"
    status "$s2" "$d/callee-last.json"
    if [[ -n "$first" ]]; then
        connected=true
        first="$(ms_since "$t0" "$first")"
        kind="$(path_kind "$addr" "$class")"
        final="$kind"
        if [[ "$kind" == direct || "$kind" == lan ]]; then
            direct_ms="$first"
        else
            settle=$((${EPOCHREALTIME%.*} + SETTLE_S))
            while ((${EPOCHREALTIME%.*} < settle)); do
                sleep 0.1
                status "$s1" "$d/caller-settle.json"
                final="$(path_kind "$(jfile "$d/caller-settle.json" "d['network']['path']['addr']")" \
                    "$(jfile "$d/caller-settle.json" "d['network']['path']['class']")")"
                if [[ "$final" == direct || "$final" == lan ]]; then
                    direct_ms="$(ms_since "$t0")"
                    break
                fi
            done
        fi
    else
        reason="$(why "$s1" "$s2" "$d" "$reason")"
    fi
    record "$d/result.json" case="$name" caller="$t1" callee="$t2" cone="$cone" connected="$connected" \
        path="$kind" final_path="$final" direct_ms="$direct_ms" path_addr="$addr" callee_path_addr="$addr2" \
        first_frame_ms="$first" \
        in_call_ms="$t_in" reason="$reason"
    # Hang up politely (the logs then show the end of the call too); lab_down stops the rest.
    [[ "$connected" == true ]] && { ctl "$s1" hangup >/dev/null 2>&1 || true; }
    lab_down
}

is_cone() { [[ "$1" != symmetric ]]; }

# --- the matrix ---
for t1 in "${LAB_TYPES[@]}"; do
    for t2 in "${LAB_TYPES[@]}"; do
        cone=false
        if is_cone "$t1" && is_cone "$t2"; then cone=true; fi
        run_case "$t1--$t2" "$t1" "$t2" "$cone" "$t1" "$t2"
    done
done
# Two devices behind one router, no hairpinning: only the LAN works.
run_case same-nat port-restricted "port-restricted (same NAT)" true port-restricted port-restricted --same-nat
# Double NAT: the callee's port-restricted home router behind a port-restricted CGN.
run_case double-nat port-restricted "port-restricted+cgn:port-restricted" true port-restricted port-restricted --cgn2=port-restricted

secs="$("$PY" -c "print($EPOCHREALTIME - $start)")"

# --- report ---
"$PY" - "$results" "$json" "$check" "$secs" "${#NODE_IPS[@]}" "$STUN" "${NODE_FLAGS[*]}" "$BIN" <<'EOF'
import json, sys
path, as_json, check, secs = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", float(sys.argv[4])
nodes, stun, node_flags, binary = int(sys.argv[5]), sys.argv[6] == "1", sys.argv[7], sys.argv[8]
cases = [json.load(open(line.strip())) for line in open(path) if line.strip()]
# "consistent": at least one side has a consistent mapping, i.e. not symmetric on both sides.
for c in cases:
    c["consistent"] = not (c["caller"].startswith("symmetric") and c["callee"].startswith("symmetric"))

def p50(xs):
    xs = sorted(xs)
    return xs[(len(xs) - 1) // 2] if xs else None

conn = [c for c in cases if c["connected"]]
cons = [c for c in cases if c["consistent"]]
# Directly: on a direct or LAN path once settled (a birthday punch may move a relayed call).
cons_direct = [c for c in cons if c["connected"] and c["final_path"] in ("direct", "lan")]
cone = [c for c in cases if c["cone"]]
cone_ms = [c["first_frame_ms"] for c in cone if c["first_frame_ms"] is not None]
all_ms = [c["first_frame_ms"] for c in conn if c["first_frame_ms"] is not None]
summary = {
    "connected": len(conn), "total": len(cases),
    "direct_where_consistent": len(cons_direct), "consistent_total": len(cons),
    "p50_ms_cone": p50(cone_ms) if len(cone_ms) == len(cone) else None,
    "p50_ms_cone_connected": p50(cone_ms), "cone_total": len(cone),
    "p50_ms": p50(all_ms), "max_ms": max(all_ms) if all_ms else None,
    "paths": {k: sum(1 for c in conn if c["path"] == k) for k in ("lan", "direct", "relay", "other")},
    "final_paths": {k: sum(1 for c in conn if c["final_path"] == k) for k in ("lan", "direct", "relay", "other")},
    "seconds": round(secs, 1), "nodes": nodes, "stun": stun, "node_flags": node_flags, "binary": binary,
}
targets = {
    "all_connected": len(conn) == len(cases) and len(cases) > 0,
    "direct_where_consistent": len(cons_direct) == len(cons),
    "p50_cone_le_1000ms": summary["p50_ms_cone"] is not None and summary["p50_ms_cone"] <= 1000,
    "every_case_le_2000ms": len(conn) == len(cases) and all(x <= 2000 for x in all_ms),
    # Two devices behind one router without hairpinning can only talk over the LAN.
    "same_nat_uses_lan": all(c["final_path"] == "lan" for c in cases if c["case"] == "same-nat"),
}
summary["targets"] = targets
summary["ok"] = all(targets.values())
if as_json:
    print(json.dumps({"cases": cases, "summary": summary}, indent=1))
else:
    cols = ["case", "caller", "callee", "connected", "path", "first_frame_ms", "final", "direct_ms",
            "lookup_ms", "nat", "path_addr", "reason"]
    dash = lambda v: "-" if v is None else str(v)
    rows = [[c["case"], c["caller"], c["callee"], "yes" if c["connected"] else "NO", dash(c["path"]),
             dash(c["first_frame_ms"]), dash(c["final_path"]), dash(c["direct_ms"]), dash(c["lookup_ms"]),
             "%s/%s" % (c["caller_nat"] or "?", c["callee_nat"] or "?"), dash(c["path_addr"]),
             (c["reason"] or "")[:240]] for c in cases]
    w = [max(len(r[i]) for r in rows + [cols]) for i in range(len(cols) - 1)]
    for r in [cols] + rows:
        print("  ".join(r[i].ljust(w[i]) for i in range(len(cols) - 1)) + "  " + r[-1])
    s = summary
    print("\n%d/%d connected; direct where consistent %d/%d; first frame p50 %s ms over cone pairs "
          "(%d/%d connected), max %s ms; %.1f s" % (
              s["connected"], s["total"], s["direct_where_consistent"], s["consistent_total"],
              s["p50_ms_cone_connected"], len(cone_ms), len(cone), s["max_ms"], secs))
    print("targets: " + ", ".join("%s %s" % (k, "ok" if v else "FAILED") for k, v in targets.items()))
sys.exit(1 if check and not summary["ok"] else 0)
EOF
