#!/usr/bin/env bash
# Port mapping against a real router implementation: Debian's miniupnpd (UPnP-IGD, NAT-PMP and
# PCP) on home1's router in the NAT lab, a real `peercom run --board sim` device in dev1 behind
# it (a port-restricted NAT: nothing unsolicited gets in without a mapping), and a second
# peercom device "on the internet" (198.18.0.4) that calls it at the mapped address.
#
#   tests/nat/portmap.sh            # table
#   tests/nat/portmap.sh --json     # one JSON document: {"ok", "seconds", "checks": [...], ...}
#
# Scenarios: miniupnpd with only UPnP-IGD; only NAT-PMP/PCP (once forcing NAT-PMP, once PCP);
# no miniupnpd at all. Needs root, nft, miniupnpd (miniupnpd-nftables), upnpc (miniupnpc),
# turnserver (coturn) and a built peercom (cargo build -p peercom; or PEERCOM=path).
# Exits non-zero if any check fails. Always tears its lab down (namespaces pcn-$LAB_ID-*,
# LAB_ID=pm unless set) and stops every process it started.
# shellcheck disable=SC2016  # strings handed to eval expand there, on purpose
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
json=0
case "${1:-}" in
--json) json=1 ;;
"") ;;
*) echo "usage: $0 [--json]" >&2; exit 2 ;;
esac

export LAB_ID="${LAB_ID:-pm}"
# shellcheck source-path=SCRIPTDIR source=lab.sh
source "$here/lab.sh"
LAB_QUIET=1
PEERCOM="${PEERCOM:-$root/target/debug/peercom}"
# Mappings asked for with this lifetime (seconds), to watch them being renewed.
LIFETIME="${PORTMAP_LIFETIME:-30}"

for tool in miniupnpd upnpc turnserver nft; do
    command -v "$tool" >/dev/null || { echo "portmap: $tool not found (apt-get install miniupnpd-nftables miniupnpc coturn nftables)" >&2; exit 2; }
done
[[ -x "$PEERCOM" ]] || { echo "portmap: $PEERCOM not found: cargo build -p peercom (or set PEERCOM)" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "portmap: must run as root (network namespaces)" >&2; exit 2; }

tmp="$(mktemp -d)"
cleanup() {
    lab_down
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start="$EPOCHREALTIME"

results="$tmp/results.tsv" # scenario \t check \t ok \t detail
: >"$results"
scenario=""
record() { printf '%s\t%s\t%s\t%s\n' "$scenario" "$1" "$2" "${3:-}" >>"$results"; }
# check NAME DETAIL CMD... : records ok=yes if CMD succeeds.
check() {
    local name="$1" detail="$2"
    shift 2
    if "$@"; then record "$name" yes "$detail"; else record "$name" no "$detail"; fi
}


# wait_until TIMEOUT_S CMD... : poll (every 50 ms) until CMD succeeds, for at most TIMEOUT_S
# seconds of wall-clock time (however long CMD itself takes).
wait_until() {
    local end=$(($(now_us) + $1 * 1000000))
    shift
    while true; do
        if "$@"; then return 0; fi
        if [[ $(now_us) -ge $end ]]; then return 1; fi
        sleep 0.05
    done
}

# Wall-clock microseconds (for elapsed-time checks in integer arithmetic).
now_us() { local t="${EPOCHREALTIME//[.,]/}"; echo "$((10#$t))"; }

# Waits (bounded) for PID to exit; its exit status, or 124 if it did not.
wait_exit() {
    local pid="$1" t="$2" i
    for ((i = 0; i < t * 20; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null && return 0 || return $?
        fi
        sleep 0.05
    done
    return 124
}

# --- the lab: home1 is port-restricted, so only a mapping lets anything in ---
lab_up port-restricted port-restricted
PEER_IP="$LAB_SRV3"

# A STUN server that can answer from a second address and port (RFC 5780 CHANGE-REQUEST):
# miniupnpd refuses to map ports while its WAN address is in a reserved range (198.18.0.0/15
# is one) unless a STUN test shows it is reachable 1:1 from outside. Our own empty config file
# keeps Debian's /etc/turnserver.conf (no-rfc5780) out.
: >"$tmp/turnserver.conf"
lab_spawn inet "$tmp/turnserver.log" turnserver -c "$tmp/turnserver.conf" --stun-only \
    --listening-ip="$LAB_SRV1" --listening-ip="$LAB_SRV2" --listening-port=3478 --alt-listening-port=3479 \
    --no-tcp --no-tls --no-dtls --no-cli --pidfile="$tmp/turnserver.pid" --db="$tmp/turndb" \
    --log-file=stdout --simple-log
lab_wait_udp inet 3479

# miniupnpd-nftables 2.3 expects its table and chains to exist (Debian's package lacks the
# helper its nft_init.sh sources). Its forward chain accepts; the lab's own forward chain
# already lets DNATed flows through (ct status dnat). The router's input chain drops
# unsolicited WAN packets: let in the STUN server's answers from its other address/port.
in_ns home1 nft -f - <<'EOF'
table inet miniupnpd {
    chain forward {
        type filter hook forward priority filter; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
EOF
in_ns home1 nft insert rule ip pcn_nat input iifname "wan" ip saddr "{ $LAB_SRV1, $LAB_SRV2 }" udp sport "{ 3478, 3479 }" accept

# Keys and configs. dev1 listens on every interface (as on the appliance); the peer on the
# internet has port mapping off (and nothing to map).
"$PEERCOM" keygen --out "$tmp/dev1.key" >/dev/null
"$PEERCOM" keygen --out "$tmp/peer.key" >/dev/null
DEV1_ID="$("$PEERCOM" id --key "$tmp/dev1.key")"
PEER_ID="$("$PEERCOM" id --key "$tmp/peer.key")"
cat >"$tmp/dev1.toml" <<EOF
[device]
name = "dev1"
key = "dev1.key"
listen = "0.0.0.0:7600"
control = "dev1.sock"

[network]
dht = false
lan_discovery = false
port_mapping = true

[[contact]]
name = "Peer"
  [[contact.device]]
  key = "$PEER_ID"
EOF

MINIUPNPD_VERSION="$(miniupnpd --version 2>&1 | head -n1 || true)"
mu_pid=""
# start_miniupnpd UPNP(yes|no) NATPMP(yes|no): miniupnpd on home1, LAN side "lan"
# (192.168.1.1), WAN "wan" (198.18.0.11), secure mode, only 192.168.1.0/24 may map.
start_miniupnpd() {
    local conf="$tmp/miniupnpd-$scenario.conf"
    cat >"$conf" <<EOF
ext_ifname=wan
listening_ip=lan
http_port=0
enable_upnp=$1
enable_natpmp=$2
secure_mode=yes
system_uptime=yes
ext_perform_stun=yes
ext_stun_host=$LAB_SRV1
ext_stun_port=3478
lease_file=$tmp/leases-$scenario
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
uuid=8f5b0c2e-6a0f-4e0e-9d59-7e8c1c2f$((RANDOM % 9000 + 1000))
allow 1024-65535 192.168.1.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
    lab_spawn home1 "$tmp/miniupnpd-$scenario.log" miniupnpd -f "$conf" -d -v -P "$tmp/miniupnpd-$scenario.pid"
    mu_pid="$LAB_LAST_PID"
    # Ready once the STUN test passed and its sockets are bound: SSDP (1900) and/or 5351.
    lab_wait_file "$tmp/miniupnpd-$scenario.log" "Port forwarding is now enabled" 15 || return 1
    if [[ "$1" == yes ]]; then lab_wait_udp home1 1900 5 || return 1; fi
    if [[ "$2" == yes ]]; then lab_wait_udp home1 5351 5 || return 1; fi
}

stop_miniupnpd() {
    [[ -n "$mu_pid" ]] || return 0
    kill -TERM "$mu_pid" 2>/dev/null || true
    wait_exit "$mu_pid" 10 || true
    mu_pid=""
}

dev_pid=""
start_device() { # start_device PROTOCOLS (env PEERCOM_PORTMAP_PROTOCOLS; "" = all)
    lab_spawn dev1 "$tmp/dev1-$scenario.log" env PEERCOM_PORTMAP_LIFETIME="$LIFETIME" \
        ${1:+PEERCOM_PORTMAP_PROTOCOLS=$1} "$PEERCOM" run --config "$tmp/dev1.toml" --board sim
    dev_pid="$LAB_LAST_PID"
    lab_wait_file "$tmp/dev1-$scenario.log" "dev1: ready as" 10
}

status() { "$PEERCOM" ctl --socket "$tmp/dev1.sock" status 2>/dev/null || true; }
malformed() { jget "$(status)" "d['counters']['dropped_malformed']"; }

# A datagram that is no peercom packet, from the internet to ADDR; counted by the device as
# dropped_malformed if it arrives.
send_inet() { in_ns inet "$PY" "$here/probe.py" send "$1" --tag "portmap-$scenario" --count "${2:-3}" >/dev/null; }

# reach_check EXT : 3 datagrams from the internet to EXT all reach the device.
reach_check() {
    local ext="$1" c0
    c0="$(malformed)"
    [[ -n "$c0" ]] || return 1
    send_inet "$ext" 3
    wait_until 3 eval '[[ "$(malformed)" -ge $((c0 + 3)) ]]'
}

lease_line() { grep -E "^UDP:$1:$LAB_DEV1:7600:" "$tmp/leases-$scenario" 2>/dev/null | head -n1 || true; }
# Router-side views. Output is captured first (with pipefail, `cmd | grep -q` fails when grep's
# early exit kills cmd), and "lacks" needs the query itself to have worked.
nft_chain() { in_ns home1 nft list chain inet miniupnpd prerouting_miniupnpd 2>/dev/null; }
nft_rules() { { nft_chain || true; } | grep -E "dnat" | sed 's/^[[:space:]]*//' | tr '\n' ' ' || true; }
nft_has() {
    local out
    out="$(nft_chain)" || return 1
    grep -q "dport $1 dnat ip to $LAB_DEV1:7600" <<<"$out"
}
nft_lacks() {
    local out
    out="$(nft_chain)" || return 1
    ! grep -q "dport $1 dnat" <<<"$out"
}
upnpc_list() { in_ns dev1 upnpc -i -l 2>/dev/null || true; }
upnpc_has() { grep -Eq "UDP +$1->$LAB_DEV1:7600" <<<"$(upnpc_list)"; }
upnpc_lacks() {
    local out
    out="$(upnpc_list)"
    grep -q "IGD" <<<"$out" && ! grep -Eq "UDP +$1->" <<<"$out"
}

# call_check EXT : a peercom device on the internet that knows dev1 only by EXT calls it; dev1
# rings. (Through a port-restricted NAT this works only because of the mapping.)
call_check() {
    local ext="$1" ok=1 ppid
    cat >"$tmp/peer.toml" <<EOF
[device]
name = "peer"
key = "peer.key"
listen = "$PEER_IP:7600"
control = "peer.sock"

[network]
dht = false
lan_discovery = false
port_mapping = false

[[contact]]
name = "Dev1"
  [[contact.device]]
  key = "$DEV1_ID"
  addr = "$ext"
EOF
    lab_spawn inet "$tmp/peer-$scenario.log" "$PEERCOM" run --config "$tmp/peer.toml" --board sim
    ppid="$LAB_LAST_PID"
    lab_wait_file "$tmp/peer-$scenario.log" "peer: ready as" 10 || ok=0
    if [[ $ok == 1 ]]; then
        "$PEERCOM" ctl --socket "$tmp/peer.sock" call Dev1 >/dev/null 2>&1 || ok=0
        "$PEERCOM" ctl --socket "$tmp/dev1.sock" wait incoming --timeout-ms 8000 >/dev/null 2>&1 || ok=0
        "$PEERCOM" ctl --socket "$tmp/peer.sock" hangup >/dev/null 2>&1 || true
        "$PEERCOM" ctl --socket "$tmp/dev1.sock" wait idle --timeout-ms 8000 >/dev/null 2>&1 || true
    fi
    kill -TERM "$ppid" 2>/dev/null || true
    wait_exit "$ppid" 10 || true
    [[ $ok == 1 ]]
}

# One scenario with miniupnpd: SCENARIO UPNP NATPMP PROTOCOLS LOG_NAME RENEWAL(yes|no)
run_mapped() {
    scenario="$1"
    local upnp="$2" natpmp="$3" protos="$4" proto_name="$5" renewal="$6"
    local log="$tmp/dev1-$scenario.log" line ext lifetime st t_map lease1 lease2 code
    if ! start_miniupnpd "$upnp" "$natpmp"; then
        record miniupnpd-ready no "$(tail -n3 "$tmp/miniupnpd-$scenario.log" | tr '\n' ' ')"
        stop_miniupnpd
        return
    fi
    record miniupnpd-ready yes "upnp=$upnp natpmp/pcp=$natpmp; STUN test passed"
    local t_start
    t_start="$(now_us)"
    if ! start_device "$protos"; then
        record device-ready no "$(tail -n3 "$log" | tr '\n' ' ')"
        kill -TERM "$dev_pid" 2>/dev/null || true
        stop_miniupnpd
        return
    fi
    # The mapping, as the device logs it.
    if lab_wait_file "$log" "port mapping: $proto_name on $LAB_LAN1_GW gives " 15; then
        line="$(grep -m1 "port mapping: $proto_name on" "$log")"
        t_map="$(now_us)"
        ext="$(sed -E 's/.* gives ([0-9.]+:[0-9]+) .*/\1/' <<<"$line")"
        lifetime="$(sed -E 's/.* gives [0-9.:]+ (.*)$/\1/' <<<"$line")"
        record mapped yes "${line#* dev1: } ($(((t_map - t_start) / 1000)) ms after start)"
    else
        record mapped no "$(grep "port mapping" "$log" | tail -n2 | tr '\n' ' ')"
        kill -TERM "$dev_pid" 2>/dev/null || true
        wait_exit "$dev_pid" 10 || true
        stop_miniupnpd
        return
    fi
    local eport="${ext##*:}"
    check public-address "$ext (router WAN $LAB_WAN1)" test "${ext%:*}" == "$LAB_WAN1"
    # (a) the router has it: lease file, nftables DNAT rule, and (UPnP) its port mapping list.
    check router-lease "$(lease_line "$eport")" test -n "$(lease_line "$eport")"
    check router-nft "table inet miniupnpd: $(nft_rules)" wait_until 2 nft_has "$eport"
    if [[ "$upnp" == yes ]]; then
        check router-upnp-list "upnpc -l lists UDP $eport->$LAB_DEV1:7600" wait_until 8 upnpc_has "$eport"
    fi
    # (a) the internet reaches the device's socket through it.
    check inbound-reaches-device "3 datagrams from the internet to $ext counted by dev1" reach_check "$ext"
    # (b) announced, and shown in ctl status.
    st="$(status)"
    check announced "network.announced = $(jget "$st" "d['network']['announced']")" \
        test "$(jget "$st" "'$ext' in d['network']['announced']")" == true
    check ctl-status "port_mapping = $(jget "$st" "d.get('port_mapping')")" test "$(jget "$st" "d.get('port_mapping')")" == "$ext"
    # A peercom device on the internet calls dev1 at the mapped address.
    check call-from-internet "peer at $PEER_IP:7600 calls dev1 at $ext: dev1 rings" call_check "$ext"
    # Renewal: a renewed lease outlives the lifetime first asked for.
    if [[ "$renewal" == yes ]]; then
        lease1="$(lease_line "$eport" | cut -d: -f5)"
        if lab_wait_file "$log" "port mapping: renewed $ext" $((LIFETIME / 2 + 10)); then
            lease2="$(lease_line "$eport" | cut -d: -f5)"
            record renewed yes "$(grep -m1 "port mapping: renewed" "$log" | sed 's/.* dev1: //'); lease expiry $lease1 -> $lease2"
            check lease-extended "router lease expiry $lease1 -> $lease2" test "${lease2:-0}" -gt "${lease1:-0}"
            # Past the first lifetime (+3 s): still mapped, still reachable.
            wait_until $((LIFETIME + 10)) eval '[[ $(($(now_us) - t_map)) -gt $(((LIFETIME + 3) * 1000000)) ]]' || true
            check outlives-lifetime "$((($(now_us) - t_map) / 1000000))s after mapping (lifetime ${LIFETIME}s): lease expiry $(lease_line "$eport" | cut -d: -f5)" \
                test -n "$(lease_line "$eport")"
            check still-reachable "after the renewal" reach_check "$ext"
        else
            record renewed no "$(grep "port mapping" "$log" | tail -n2 | tr '\n' ' ')"
        fi
    else
        record lifetime yes "granted $lifetime (miniupnpd's PCP minimum is 120 s, RFC 6887 15); renewal shown with UPnP and NAT-PMP"
    fi
    # (c) SIGTERM: the device removes the mapping before it exits.
    kill -TERM "$dev_pid"
    code=0
    wait_exit "$dev_pid" 15 || code=$?
    check clean-exit "exit status $code" test "$code" == 0
    check removed-logged "$(grep -m1 "port mapping: removed\|could not remove" "$log" | sed 's/.* dev1: //')" grep -q "port mapping: removed $ext" "$log"
    check router-lease-gone "lease file: $(tr '\n' ' ' <"$tmp/leases-$scenario" 2>/dev/null)" test -z "$(lease_line "$eport")"
    check router-nft-gone "no dnat for $eport in table inet miniupnpd" wait_until 2 nft_lacks "$eport"
    if [[ "$upnp" == yes ]]; then
        check router-upnp-list-gone "upnpc -l has no UDP $eport" wait_until 8 upnpc_lacks "$eport"
    fi
    stop_miniupnpd
}

# Scenario "none": no miniupnpd. The device says so, starts at once and works; nothing from the
# internet gets in (the control for inbound-reaches-device above).
run_none() {
    scenario="none"
    local log="$tmp/dev1-$scenario.log" code c0 c1
    : >"$tmp/leases-$scenario"
    if ! start_device ""; then
        record device-ready no "$(tail -n3 "$log" | tr '\n' ' ')"
        return
    fi
    record device-ready yes "ready without waiting for the router"
    if lab_wait_file "$log" "port mapping: no UPnP/NAT-PMP/PCP on the gateway" 15; then
        record no-mapping-logged yes "$(grep -m1 "port mapping: no" "$log" | sed 's/.* dev1: //')"
    else
        record no-mapping-logged no "$(grep "port mapping" "$log" | tail -n2 | tr '\n' ' ')"
    fi
    check ready-first "the ready line comes before the port-mapping verdict" \
        test "$(grep -n "dev1: ready as" "$log" | cut -d: -f1)" -lt "$(grep -n "port mapping: no" "$log" | cut -d: -f1 || echo 0)"
    local st
    st="$(status)"
    check ctl-status "port_mapping = $(jget "$st" "d.get('port_mapping')"), announced = $(jget "$st" "d['network']['announced']")" \
        test -z "$(jget "$st" "d.get('port_mapping')")"
    # 3 datagrams to the router's WAN port 7600 (dropped by the NAT), then 1 straight from the
    # router's LAN side (must arrive): only that one is counted.
    c0="$(malformed)"
    send_inet "$LAB_WAN1:7600" 3
    in_ns home1 "$PY" "$here/probe.py" send "$LAB_DEV1:7600" --tag marker --count 1 >/dev/null
    wait_until 3 eval '[[ "$(malformed)" -ge $((c0 + 1)) ]]' || true
    sleep 0.15
    c1="$(malformed)"
    check inbound-blocked "counted $((c1 - c0)) of 3 from the internet + 1 from the LAN" test "$((c1 - c0))" == 1
    kill -TERM "$dev_pid"
    code=0
    wait_exit "$dev_pid" 15 || code=$?
    check clean-exit "exit status $code" test "$code" == 0
}

# UPnP and PCP with every protocol allowed (PCP is tried first, UPnP when PCP finds nothing);
# NAT-PMP forced, since a router that speaks PCP gets PCP.
run_mapped upnp yes no "" "UPnP-IGD" yes
run_mapped natpmp no yes natpmp "NAT-PMP" yes
run_mapped pcp no yes "" "PCP" no
run_none

elapsed="$("$PY" -c "print(round($EPOCHREALTIME - $start, 1))")"
failed="$(awk -F'\t' '$3 != "yes"' "$results" | wc -l)"

if [[ $json == 1 ]]; then
    "$PY" - "$results" "$elapsed" "$MINIUPNPD_VERSION" "$LIFETIME" <<'EOF'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
checks = [{"scenario": r[0], "check": r[1], "ok": r[2] == "yes", "detail": r[3] if len(r) > 3 else ""} for r in rows]
print(json.dumps({
    "ok": all(c["ok"] for c in checks) and len(checks) > 0,
    "seconds": float(sys.argv[2]),
    "miniupnpd": sys.argv[3],
    "requested_lifetime_s": int(sys.argv[4]),
    "passed": sum(c["ok"] for c in checks),
    "failed": sum(not c["ok"] for c in checks),
    "checks": checks,
}, indent=1))
EOF
else
    printf '%-8s %-24s %-4s %s\n' scenario check ok detail
    while IFS=$'\t' read -r s c o d; do
        printf '%-8s %-24s %-4s %s\n' "$s" "$c" "$o" "$d"
    done <"$results"
    echo "$(($(wc -l <"$results") - failed)) passed, $failed failed (${elapsed}s, $MINIUPNPD_VERSION)"
fi
[[ "$failed" == 0 && -s "$results" ]]
