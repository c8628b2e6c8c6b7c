#!/usr/bin/env bash
# Self-test of the NAT lab: for each NAT type, brings the lab up and measures from the device
# whether the router behaves as the type's name says (mapping, filtering, unsolicited inbound,
# hairpin, hole punching), plus hairpin on and double NAT (CGN). Needs root and nft.
#
#   tests/nat/selftest.sh            # table
#   tests/nat/selftest.sh --json     # one JSON document: {"ok", "checks": [...], ...}
#
# Exits non-zero if any check fails. Always tears the lab down.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
json=0
case "${1:-}" in
--json) json=1 ;;
"") ;;
*) echo "usage: $0 [--json]" >&2; exit 2 ;;
esac

# shellcheck source-path=SCRIPTDIR source=lab.sh
source "$here/lab.sh"
LAB_QUIET=1
tmp="$(mktemp -d)"
cleanup() { lab_down; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start="$EPOCHREALTIME"

results="$tmp/results.tsv"   # lab \t check \t expected \t measured \t detail
: >"$results"
labname=""

probe() { local ns="$1"; shift; in_ns "$ns" "$PY" "$here/probe.py" "$@"; }


# The last line of FILE that has "event": "NAME".
event_line() { grep -F "\"event\": \"$2\"" "$1" | tail -n1 || true; }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$labname" "$1" "$2" "$3" "${4:-}" >>"$results"; }

# Echo servers: two IPs x two ports, so that we can ask from another port / another IP.
S1A="$LAB_SRV1:3478" S1B="$LAB_SRV1:3479" S2A="$LAB_SRV2:3478" S2B="$LAB_SRV2:3479"
start_echo() {
    rm -f "$tmp/echo.ready"
    lab_spawn inet "$tmp/echo.log" "$PY" "$here/probe.py" echo \
        --bind "$S1A" --bind "$S1B" --bind "$S2A" --bind "$S2B" --ready-file "$tmp/echo.ready"
    lab_wait_file "$tmp/echo.ready" . || true
}

# (a) mapping: one local port towards three server endpoints (2 IPs, 2 ports).
check_mapping() {
    local ns="$1" dev_ip="$2" pub="$3" expected="$4" port=40001 out m1 m2 m3 measured
    out="$(probe "$ns" map --bind "$port" "$S1A" "$S2A" "$S1B" || true)"
    m1="$(jget "$out" "d['mapped']['$S1A']")"
    m2="$(jget "$out" "d['mapped']['$S2A']")"
    m3="$(jget "$out" "d['mapped']['$S1B']")"
    if [[ -z "$m1" || -z "$m2" || -z "$m3" ]]; then
        measured="no-answer"
    elif [[ "$m1" == "$dev_ip:$port" && "$m2" == "$m1" && "$m3" == "$m1" ]]; then
        measured="none"
    elif [[ "$m2" == "$m1" && "$m3" == "$m1" ]]; then
        measured="independent"
    else
        measured="dependent"
    fi
    record mapping "$expected" "$measured" "local $port -> $m1 / $m2 / $m3"
    record public-ip "$pub" "${m1%:*}" "address the servers saw"
    if [[ "$measured" == independent ]]; then
        if [[ "${m1##*:}" == "$port" ]]; then
            record port-preserved yes yes "$port -> ${m1##*:}"
        else
            record port-preserved yes no "$port -> ${m1##*:}"
        fi
    fi
}

# (b) filtering: after the device sent to S1A, do answers from S1B (same IP, other port)
# and S2A (other IP) get through?
check_filter() {
    local ns="$1" exp_port="$2" exp_ip="$3" out a b
    out="$(probe "$ns" filter --bind 40002 --server "$S1A" --from "$S1B" --from "$S2A" || true)"
    a="$(jget "$out" "'yes' if d['got']['$S1B'] else 'no'")"
    b="$(jget "$out" "'yes' if d['got']['$S2A'] else 'no'")"
    record filter-same-ip-other-port "$exp_port" "${a:-error}" "sent to $S1A, answer from $S1B"
    record filter-other-ip "$exp_ip" "${b:-error}" "sent to $S1A, answer from $S2A"
}

# An unsolicited datagram from the internet to a port the device never used.
check_unsolicited() {
    local ns="$1" router="$2" dev_ip="$3" pub="$4" expected="$5" port=40003 f="$tmp/unsol.out" res
    lab_spawn "$ns" "$f" "$PY" "$here/probe.py" reach --bind "$port" --end-tag end --ms 3000
    lab_wait_file "$f" '"event": "ready"' || true
    probe inet send --bind "$LAB_SRV2:5000" --tag unsolicited "$pub:$port" || true
    # End marker straight from the router's LAN side (always reaches the device).
    probe "$router" send --tag end "$dev_ip:$port" || true
    lab_wait_file "$f" '"event": "done"' || true
    res="$(jget "$(event_line "$f" "done")" "'yes' if any(g['tag'] == 'unsolicited' for g in d['got']) else 'no'")"
    record unsolicited-inbound "$expected" "${res:-error}" "$LAB_SRV2:5000 -> $pub:$port (never used)"
}

# Two devices behind one NAT using the same local port: dev1 maps it towards S1A, then dev1b
# towards S2A and S1A. Plain Linux SNAT would hand dev1b dev1's port towards S2A (that tuple
# is free) and another one towards S1A; a real EIM NAT gives dev1b one port of its own.
check_second_device() {
    local expected="$1" port=40006 o1 o2 a b c class same
    o1="$(probe dev1 map --bind "$port" "$S1A" || true)"
    o2="$(probe dev1b map --bind "$port" "$S2A" "$S1A" || true)"
    a="$(jget "$o1" "d['mapped']['$S1A']")"
    b="$(jget "$o2" "d['mapped']['$S2A']")"
    c="$(jget "$o2" "d['mapped']['$S1A']")"
    if [[ -z "$a" || -z "$b" || -z "$c" ]]; then
        class=no-answer
    elif [[ "$b" == "$c" ]]; then
        class=independent
    else
        class=dependent
    fi
    if [[ "$b" == "$a" || "$c" == "$a" ]]; then same=shared; else same=distinct; fi
    record second-device-same-port "$expected" "$class,$same" "dev1 $port -> $a; dev1b $port -> $b / $c"
}

# Hairpin: dev1b opens a mapping; dev1 sends to it via the WAN address, then via the LAN.
check_hairpin() {
    local expected="$1" port=40004 f="$tmp/hairpin.out" mapped got hp lan
    lab_spawn dev1b "$f" "$PY" "$here/probe.py" reach --bind "$port" --hello "$S1A" --end-tag end --ms 3000
    lab_wait_file "$f" '"event": "(ready|error)"' || true
    mapped="$(jget "$(event_line "$f" ready)" "d['mapped']")"
    if [[ -z "$mapped" ]]; then
        record hairpin "$expected" error "dev1b got no mapping: $(tr '\n\t' '  ' <"$f")"
        return
    fi
    probe dev1 send --bind 40014 --tag hairpin "$mapped" || true
    probe dev1 send --bind 40014 --tag end "$LAB_DEV1B:$port" || true
    lab_wait_file "$f" '"event": "done"' || true
    got="$(event_line "$f" "done")"
    hp="$(jget "$got" "'yes' if any(g['tag'] == 'hairpin' for g in d['got']) else 'no'")"
    lan="$(jget "$got" "'yes' if any(g['tag'] == 'end' for g in d['got']) else 'no'")"
    record lan-direct yes "${lan:-error}" "dev1 -> $LAB_DEV1B:$port"
    record hairpin "$expected" "${hp:-error}" "dev1 -> $mapped (dev1b's mapping) $(jget "$got" "[g['from'] for g in d['got'] if g['tag'] == 'hairpin']")"
}

# Hole punching between dev1 and dev2: both learn their mapping from S1A, then send to each
# other's mapped address at the same time.
check_punch() {
    local expected="$1" port=40005 f1="$tmp/p1.out" f2="$tmp/p2.out" m1 m2 d1 d2 measured
    rm -f "$tmp/p1.peer" "$tmp/p2.peer"
    lab_spawn dev1 "$f1" "$PY" "$here/probe.py" punch --bind "$port" --hello "$S1A" --peer-file "$tmp/p1.peer" --ms 1500
    lab_spawn dev2 "$f2" "$PY" "$here/probe.py" punch --bind "$port" --hello "$S1A" --peer-file "$tmp/p2.peer" --ms 1500
    lab_wait_file "$f1" '"event": "(ready|error)"' || true
    lab_wait_file "$f2" '"event": "(ready|error)"' || true
    m1="$(jget "$(event_line "$f1" ready)" "d['mapped']")"
    m2="$(jget "$(event_line "$f2" ready)" "d['mapped']")"
    echo "$m2" >"$tmp/p1.peer.tmp" && mv "$tmp/p1.peer.tmp" "$tmp/p1.peer"
    echo "$m1" >"$tmp/p2.peer.tmp" && mv "$tmp/p2.peer.tmp" "$tmp/p2.peer"
    lab_wait_file "$f1" '"event": "(done|error)"' || true
    lab_wait_file "$f2" '"event": "(done|error)"' || true
    d1="$(jget "$(event_line "$f1" "done")" "'yes' if d['heard'] and d['peer_heard'] else 'no'")"
    d2="$(jget "$(event_line "$f2" "done")" "'yes' if d['heard'] and d['peer_heard'] else 'no'")"
    if [[ "$d1" == yes && "$d2" == yes ]]; then measured=yes; else measured=no; fi
    record punch-dev1-dev2 "$expected" "$measured" "$m1 <-> $m2"
}

expect_mapping() {
    case "$1" in none) echo none ;; symmetric) echo dependent ;; *) echo independent ;; esac
}
expect_same_ip_other_port() {
    case "$1" in none | full-cone | address-restricted) echo yes ;; *) echo no ;; esac
}
expect_other_ip() {
    case "$1" in none | full-cone) echo yes ;; *) echo no ;; esac
}

# --- one lab per NAT type: both homes of that type, two devices behind home1 ---
for t in "${LAB_TYPES[@]}"; do
    labname="$t"
    lab_up "$t" "$t" --same-nat
    start_echo
    check_mapping dev1 "$LAB_DEV1" "$LAB_PUB1" "$(expect_mapping "$t")"
    check_filter dev1 "$(expect_same_ip_other_port "$t")" "$(expect_other_ip "$t")"
    check_unsolicited dev1 home1 "$LAB_DEV1" "$LAB_PUB1" "$([[ $t == none ]] && echo yes || echo no)"
    if [[ "$t" != none ]]; then
        check_second_device "$(expect_mapping "$t"),distinct"
        check_hairpin no
    fi
    check_punch "$([[ $t == symmetric ]] && echo no || echo yes)"
    timeouts="$(in_ns home1 sysctl -n net.netfilter.nf_conntrack_udp_timeout net.netfilter.nf_conntrack_udp_timeout_stream | paste -sd/)"
    lab_down
done

# --- hairpin on (port-restricted router): dev1 reaches dev1b via the WAN address ---
labname="port-restricted+hairpin"
lab_up port-restricted port-restricted --same-nat --hairpin1
start_echo
check_hairpin yes
check_mapping dev1b "$LAB_DEV1B" "$LAB_PUB1" independent
lab_down

# --- double NAT: home2 (port-restricted) behind a port-restricted CGN ---
labname="port-restricted+cgn"
lab_up port-restricted port-restricted --cgn2
start_echo
check_mapping dev2 "$LAB_DEV2" "$LAB_CGN_PUB" independent
check_filter dev2 no no
check_unsolicited dev2 home2 "$LAB_DEV2" "$LAB_CGN_PUB" no
check_punch yes
lab_down

# --- double NAT with a symmetric CGN under a full-cone home router: symmetric overall ---
labname="full-cone+cgn-symmetric"
lab_up port-restricted full-cone --cgn2=symmetric
start_echo
check_mapping dev2 "$LAB_DEV2" "$LAB_CGN_PUB" dependent
check_filter dev2 no no
lab_down

secs="$("$PY" -c "print($EPOCHREALTIME - $start)")"

# --- report ---
"$PY" - "$results" "$json" "$timeouts" "$secs" <<'EOF'
import json, sys
path, as_json, timeouts, secs = sys.argv[1], sys.argv[2] == "1", sys.argv[3], float(sys.argv[4])
checks = []
for line in open(path):
    lab, check, exp, meas, detail = line.rstrip("\n").split("\t")
    checks.append({"lab": lab, "check": check, "expected": exp, "measured": meas,
                   "pass": exp == meas, "detail": detail})
ok = all(c["pass"] for c in checks)
udp, stream = (timeouts.split("/") + ["", ""])[:2]
if as_json:
    print(json.dumps({"ok": ok, "seconds": round(secs, 1),
                      "conntrack_udp_timeout_s": int(udp) if udp else None,
                      "conntrack_udp_timeout_stream_s": int(stream) if stream else None,
                      "checks": checks}, indent=1))
else:
    cols = ["lab", "check", "expected", "measured", "result", "detail"]
    rows = [[c["lab"], c["check"], c["expected"], c["measured"],
             "PASS" if c["pass"] else "FAIL", c["detail"]] for c in checks]
    w = [max(len(r[i]) for r in rows + [cols]) for i in range(len(cols) - 1)]
    for r in [cols] + rows:
        print("  ".join(r[i].ljust(w[i]) for i in range(len(cols) - 1)) + "  " + r[-1])
    npass = sum(c["pass"] for c in checks)
    print("\n%d/%d checks passed in %.1f s; conntrack UDP timeouts %s s / %s s (stream)"
          % (npass, len(checks), secs, udp, stream))
sys.exit(0 if ok else 1)
EOF
