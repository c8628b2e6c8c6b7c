# shellcheck shell=bash
# shellcheck disable=SC2034  # LAB_* variables are for the scripts that source this file
# NAT lab: network namespaces + veth + nftables NAT, for placing calls between peercom
# devices behind different kinds of home routers. Source it (as root), then:
#
#   source tests/nat/lab.sh
#   trap lab_down EXIT
#   lab_up full-cone symmetric [--same-nat] [--cgn2[=TYPE]] [--hairpin|--hairpin1|--hairpin2]
#   in_ns dev1 ping -c1 "$LAB_SRV1"
#   lab_spawn inet /tmp/echo.log python3 tests/nat/probe.py echo --bind "$LAB_SRV1:3478"
#   lab_down
#
# NAT types (per home router): none | full-cone | address-restricted | port-restricted | symmetric.
# See README.md beside this file for the topology and how each type is emulated.
#
# Namespaces are named "pcn-<role>" (roles: inet home1 dev1 dev1b home2 dev2 cgn), or
# "pcn-$LAB_ID-<role>" when LAB_ID is set (for running several labs at once). lab_up first
# removes whatever an earlier aborted run with the same names left behind.
#
# Only ever touches namespaces it created; all addresses are in 198.18.0.0/15 (benchmarking
# range), 100.64.0.0/24 (CGN shared space) and 192.168.{1,2}.0/24, all inside the namespaces.

LAB_ID="${LAB_ID:-}"
LAB_PREFIX="pcn-${LAB_ID:+$LAB_ID-}"
LAB_ROLES=(dev1 dev1b dev2 home1 home2 cgn inet)
LAB_TYPES=(none full-cone address-restricted port-restricted symmetric)

# --- addresses (fixed) ---
LAB_PUBLIC_NET=198.18.0.0/24
LAB_INET_GW=198.18.0.1     # the "internet" namespace itself (default gateway of the WANs)
LAB_SRV1=198.18.0.2        # server addresses, all in the inet namespace
LAB_SRV2=198.18.0.3
LAB_SRV3=198.18.0.4
LAB_SRV4=198.18.0.5
LAB_CGN_PUB=198.18.0.20    # public address of the carrier-grade NAT (with --cgn2)
LAB_CGN_LAN=100.64.0.1     # its inside address; home2's WAN is 100.64.0.12 behind it

# --- addresses that depend on lab_up's arguments (set by lab_up) ---
LAB_NAT1="" LAB_NAT2="" LAB_CGN="" LAB_HAIRPIN1=0 LAB_HAIRPIN2=0 LAB_SAME_NAT=0
LAB_WAN1="" LAB_WAN2=""    # the routers' WAN addresses
LAB_PUB1="" LAB_PUB2=""    # the address a device of home1/home2 appears as on the internet
LAB_LAN1_GW="" LAB_DEV1="" LAB_DEV1B="" LAB_LAN2_GW="" LAB_DEV2=""
LAB_UDP_TIMEOUT="" LAB_UDP_TIMEOUT_STREAM=""   # conntrack UDP timeouts seen in the routers (s)

LAB_PIDS=()                # background processes started with lab_spawn

# lab_ns ROLE -> namespace name
# The Python interpreter itself, not a version-manager shim (which costs ~80 ms per start).
PY="$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')"

# jget JSON PYEXPR : evaluate PYEXPR with d = the parsed JSON; prints "" for None or any error,
# JSON for dicts, lists and booleans.
jget() {
    "$PY" -c '
import json, sys
try:
    d = json.loads(sys.argv[1])
    v = eval(sys.argv[2])
except Exception:
    v = None
print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list, bool)) else v))
' "$1" "$2"
}

# jfile FILE PYEXPR : jget on the JSON in FILE ("" when there is no such file).
jfile() { jget "$(cat "$1" 2>/dev/null)" "$2"; }

lab_ns() { printf '%s%s\n' "$LAB_PREFIX" "$1"; }

LAB_NS_INET="$(lab_ns inet)"
LAB_NS_HOME1="$(lab_ns home1)"
LAB_NS_HOME2="$(lab_ns home2)"
LAB_NS_DEV1="$(lab_ns dev1)"
LAB_NS_DEV1B="$(lab_ns dev1b)"
LAB_NS_DEV2="$(lab_ns dev2)"
LAB_NS_CGN="$(lab_ns cgn)"

_lab_log() { [[ "${LAB_QUIET:-0}" == 1 ]] || echo "lab: $*" >&2; }
_lab_die() { echo "lab: error: $*" >&2; return 1; }

# Resolve a role (dev1) or a full namespace name (pcn-dev1) to a namespace name.
_lab_resolve() {
    local r
    for r in "${LAB_ROLES[@]}"; do
        if [[ "$1" == "$r" ]]; then lab_ns "$r"; return; fi
    done
    printf '%s\n' "$1"
}

# in_ns ROLE|NS CMD... : run a command inside a lab namespace.
in_ns() {
    local ns
    ns="$(_lab_resolve "$1")"; shift
    ip netns exec "$ns" "$@"
}

_lab_ns_exists() { [[ -e "/run/netns/$1" ]]; }

# lab_spawn ROLE|NS LOGFILE CMD... : start CMD in the background inside a namespace (stdout
# and stderr to LOGFILE); its pid is appended to LAB_PIDS and printed in LAB_LAST_PID.
lab_spawn() {
    local ns log
    ns="$(_lab_resolve "$1")"; log="$2"; shift 2
    # Truncate here, not in the background child: a caller polling LOG right after this
    # returns must never see an earlier run's content.
    : >"$log"
    ip netns exec "$ns" "$@" >>"$log" 2>&1 &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
}

# lab_wait_file FILE REGEX [TIMEOUT_S=5] : bounded poll until FILE has a line matching REGEX.
lab_wait_file() {
    local f="$1" re="$2" t="${3:-5}" i
    for ((i = 0; i < t * 50; i++)); do
        if [[ -f "$f" ]] && grep -qE -- "$re" "$f"; then return 0; fi
        sleep 0.02
    done
    _lab_die "timed out after ${t}s waiting for /$re/ in $f"
}

# lab_wait_udp ROLE|NS PORT [TIMEOUT_S=5] : bounded poll until a UDP socket is bound to PORT.
lab_wait_udp() {
    local ns="$1" port="$2" t="${3:-5}" i
    for ((i = 0; i < t * 50; i++)); do
        if in_ns "$ns" ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then return 0; fi
        sleep 0.02
    done
    _lab_die "timed out after ${t}s waiting for udp port $port in $ns"
}

# Kill the given pids (only these), then wait (bounded) until they are gone.
_lab_kill_pids() {
    local p i alive
    [[ $# -gt 0 ]] || return 0
    kill "$@" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive=0
        for p in "$@"; do
            if kill -0 "$p" 2>/dev/null; then alive=1; fi
        done
        [[ $alive == 1 ]] || return 0
        sleep 0.02
    done
    kill -9 "$@" 2>/dev/null || true
}

# lab_down : stop everything started in the lab and delete its namespaces. Idempotent; also
# cleans up after an earlier aborted run that used the same LAB_ID.
lab_down() {
    local r ns pids
    if [[ ${#LAB_PIDS[@]} -gt 0 ]]; then
        _lab_kill_pids "${LAB_PIDS[@]}"
        wait "${LAB_PIDS[@]}" 2>/dev/null || true
    fi
    LAB_PIDS=()
    for r in "${LAB_ROLES[@]}"; do
        ns="$(lab_ns "$r")"
        _lab_ns_exists "$ns" || continue
        # Processes still inside one of our namespaces were started by an earlier lab run.
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        if [[ ${#pids[@]} -gt 0 ]]; then _lab_kill_pids "${pids[@]}"; fi
        ip netns del "$ns" 2>/dev/null || true
    done
    return 0
}

_lab_valid_type() {
    local t
    for t in "${LAB_TYPES[@]}"; do [[ "$1" == "$t" ]] && return 0; done
    _lab_die "unknown NAT type '$1' (one of: ${LAB_TYPES[*]})"
}

# Create a namespace with lo up and sane sysctls. Routers get forwarding on and no ICMP
# redirects (a hairpinned packet leaves by the interface it came in on; a redirect would
# teach the device to bypass the router). Bridged frames do not go through the IP hooks
# (br_netfilter off), as in a real switch.
_lab_mkns() {
    local ns="$1" router="$2"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # IPv4 only: no IPv6 (not even link-local) that could bypass the NAT under test.
    in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
    in_ns "$ns" sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
    if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
        in_ns "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
    fi
    if [[ "$router" == 1 ]]; then
        in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
    fi
}

# veth NS_A IF_A NS_B IF_B : a veth pair between two namespaces, both ends up.
_lab_veth() {
    ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

# _lab_nat_rules TYPE WAN_IP HAIRPIN : print the nftables ruleset of a NAT router whose
# interfaces are "wan" and "lan". TYPE is never "none" here.
#
# Common to all types (see README.md):
#   * forward: LAN -> anywhere allowed; WAN -> LAN only for established/related flows or flows
#     the prerouting chain DNATed (full-cone / address-restricted inbound, hairpin).
#   * input: nothing unsolicited reaches the router itself from the WAN (dropped silently).
#   * @ports (mapped UDP port -> internal ip . port) and @rev (internal ip . port -> WAN ip .
#     mapped port) record every live UDP mapping; they are refreshed by each outbound packet
#     and expire after MAP_TIMEOUT seconds without one.
#   * @seen (mapped port . remote ip) records which remote IPs a mapping has sent to.
_lab_nat_rules() {
    local type="$1" wan="$2" hairpin="$3" to="${LAB_MAP_TIMEOUT:-$LAB_UDP_TIMEOUT_STREAM}"
    cat <<EOF
table ip pcn_nat {
    map ports { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout ${to}s; }
    map rev { type ipv4_addr . inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout ${to}s; }
    set seen { type inet_service . ipv4_addr; flags dynamic,timeout; timeout ${to}s; }

    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
EOF
    case "$type" in
    full-cone)
        cat <<EOF
        # Endpoint-independent filtering: a new inbound flow to a live mapped port goes to
        # its internal endpoint, whoever sends it.
        iifname "wan" ip daddr $wan udp dport @ports dnat ip to udp dport map @ports
EOF
        ;;
    address-restricted)
        cat <<EOF
        # Address-dependent filtering: a new inbound flow to a live mapped port is let in
        # only from an IP (any port) this mapping has sent to.
        iifname "wan" ip daddr $wan udp dport . ip saddr @seen dnat ip to udp dport map @ports
EOF
        ;;
    esac
    if [[ "$hairpin" == 1 ]]; then
        cat <<EOF
        # Hairpin: LAN -> own WAN address:mapped port is looped back to the mapping's owner.
        iifname "lan" ip daddr $wan udp dport @ports dnat ip to udp dport map @ports
EOF
    fi
    cat <<EOF
    }

    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
EOF
    if [[ "$type" == symmetric ]]; then
        cat <<EOF
        # Endpoint-dependent mapping: every new flow (new destination ip:port) gets a random
        # external port.
        oifname "wan" snat ip to $wan fully-random
EOF
        if [[ "$hairpin" == 1 ]]; then
            echo "        iifname \"lan\" oifname \"lan\" ct status dnat snat ip to $wan fully-random"
        fi
    else
        cat <<EOF
        # Endpoint-independent mapping: an internal ip:port that already has a mapping keeps
        # it for every destination; a new one keeps its own port when that port is not
        # already somebody's mapping, else gets a random one.
        oifname "wan" meta l4proto udp ip saddr . udp sport @rev snat ip to ip saddr . udp sport map @rev
        oifname "wan" meta l4proto udp udp sport @ports snat ip to $wan:1024-65535 random
        oifname "wan" snat ip to $wan
EOF
        if [[ "$hairpin" == 1 ]]; then
            cat <<EOF
        iifname "lan" oifname "lan" ct status dnat meta l4proto udp ip saddr . udp sport @rev snat ip to ip saddr . udp sport map @rev
        iifname "lan" oifname "lan" ct status dnat snat ip to $wan
EOF
        fi
    fi
    cat <<EOF
    }

    # Runs after the NAT above (priority srcnat + 10), so it sees the translated source port.
    chain record {
        type filter hook postrouting priority srcnat + 10; policy accept;
        iifname "lan" oifname "wan" meta l4proto udp ct direction original update @ports { udp sport : ct original ip saddr . ct original proto-src }
        iifname "lan" oifname "wan" meta l4proto udp ct direction original update @rev { ct original ip saddr . ct original proto-src : ip saddr . udp sport }
        iifname "lan" oifname "wan" meta l4proto udp ct direction reply update @ports { udp sport : ct reply ip saddr . ct reply proto-src }
        iifname "lan" oifname "wan" meta l4proto udp ct direction reply update @rev { ct reply ip saddr . ct reply proto-src : ip saddr . udp sport }
        iifname "lan" oifname "wan" meta l4proto udp update @seen { udp sport . ip daddr }
    }

    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "lan" accept
        ct state established,related accept
        ct status dnat accept
    }

    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" icmp type echo-request accept
        iifname "wan" drop
    }
}
EOF
}

# _lab_router NS TYPE HAIRPIN WAN_IP : load the NAT ruleset into a router namespace.
_lab_router_nat() {
    local ns="$1" type="$2" hairpin="$3" wan="$4"
    [[ "$type" == none ]] && return 0
    _lab_nat_rules "$type" "$wan" "$hairpin" | in_ns "$ns" nft -f -
}

# lab_nft ROLE|NS : print the ruleset of a namespace (for debugging).
lab_nft() { in_ns "$1" nft list ruleset; }

# _lab_home N TYPE WAN_NS WAN_BR_OR_EMPTY WAN_IP/PLEN WAN_GW HAIRPIN DEVROLES...
# Build home router N: "wan" veth towards WAN_NS (enslaved to bridge br0 there when given),
# bridge "lan" with one veth per device. type none routes 198.18.N.0/24 instead of NATing
# 192.168.N.0/24.
_lab_home() {
    local n="$1" type="$2" wan_ns="$3" wan_peer="$4" wan_cidr="$5" wan_gw="$6" hairpin="$7"
    shift 7
    local ns lan_net gw d i=2 dns
    ns="$(lab_ns "home$n")"
    if [[ "$type" == none ]]; then lan_net="198.18.$n"; else lan_net="192.168.$n"; fi
    gw="$lan_net.1"
    _lab_mkns "$ns" 1
    _lab_veth "$ns" wan "$wan_ns" "$wan_peer"
    if [[ "$wan_ns" == "$LAB_NS_INET" ]]; then
        ip -n "$wan_ns" link set "$wan_peer" master br0
    fi
    ip -n "$ns" addr add "$wan_cidr" dev wan
    ip -n "$ns" route add default via "$wan_gw"
    ip -n "$ns" link add lan type bridge
    ip -n "$ns" link set lan up
    ip -n "$ns" addr add "$gw/24" dev lan
    for d in "$@"; do
        dns="$(lab_ns "$d")"
        _lab_mkns "$dns" 0
        _lab_veth "$dns" eth0 "$ns" "$d"
        ip -n "$ns" link set "$d" master lan
        ip -n "$dns" addr add "$lan_net.$i/24" dev eth0
        ip -n "$dns" route add default via "$gw"
        i=$((i + 1))
    done
    _lab_router_nat "$ns" "$type" "$hairpin" "${wan_cidr%/*}"
}

# lab_up NAT1 NAT2 [--same-nat] [--cgn2[=TYPE]] [--hairpin|--hairpin1|--hairpin2]
#   NAT1/NAT2: type of home1's / home2's router.
#   --same-nat: also dev1b (second device on home1's LAN).
#   --cgn2[=TYPE]: home2's WAN sits behind a carrier-grade NAT of TYPE (default
#     port-restricted); devices of home2 then appear as $LAB_CGN_PUB.
#   --hairpin*: hairpin NAT on both / home1's / home2's router (default off).
lab_up() {
    local nat1="${1:-}" nat2="${2:-}" a
    [[ -n "$nat1" && -n "$nat2" ]] || { _lab_die "usage: lab_up NAT1 NAT2 [--same-nat] [--cgn2[=TYPE]] [--hairpin|--hairpin1|--hairpin2]"; return 1; }
    shift 2
    _lab_valid_type "$nat1" || return 1
    _lab_valid_type "$nat2" || return 1
    LAB_NAT1="$nat1" LAB_NAT2="$nat2" LAB_CGN="" LAB_HAIRPIN1=0 LAB_HAIRPIN2=0 LAB_SAME_NAT=0
    for a in "$@"; do
        case "$a" in
        --same-nat) LAB_SAME_NAT=1 ;;
        --cgn2) LAB_CGN="port-restricted" ;;
        --cgn2=*) LAB_CGN="${a#--cgn2=}" ;;
        --hairpin) LAB_HAIRPIN1=1 LAB_HAIRPIN2=1 ;;
        --hairpin1) LAB_HAIRPIN1=1 ;;
        --hairpin2) LAB_HAIRPIN2=1 ;;
        *) _lab_die "lab_up: unknown option $a"; return 1 ;;
        esac
    done
    if [[ -n "$LAB_CGN" ]]; then
        _lab_valid_type "$LAB_CGN" || return 1
        [[ "$LAB_CGN" != none ]] || { _lab_die "--cgn2=none: just leave --cgn2 out"; return 1; }
        [[ "$nat2" != none ]] || { _lab_die "--cgn2 needs a NAT type for home2, not none"; return 1; }
    fi
    command -v nft >/dev/null || { _lab_die "nft not found (apt-get install nftables)"; return 1; }
    [[ $EUID -eq 0 ]] || { _lab_die "must run as root"; return 1; }

    lab_down
    _lab_log "up: home1=$nat1 home2=$nat2${LAB_CGN:+ cgn2=$LAB_CGN}$([[ $LAB_SAME_NAT == 1 ]] && echo ' +dev1b') hairpin=$LAB_HAIRPIN1/$LAB_HAIRPIN2"

    # The internet: one bridge, the gateway address and the server addresses.
    _lab_mkns "$LAB_NS_INET" 1
    ip -n "$LAB_NS_INET" link add br0 type bridge
    ip -n "$LAB_NS_INET" link set br0 up
    for a in "$LAB_INET_GW" "$LAB_SRV1" "$LAB_SRV2" "$LAB_SRV3" "$LAB_SRV4"; do
        ip -n "$LAB_NS_INET" addr add "$a/24" dev br0
    done
    LAB_UDP_TIMEOUT="$(in_ns "$LAB_NS_INET" sysctl -n net.netfilter.nf_conntrack_udp_timeout)"
    LAB_UDP_TIMEOUT_STREAM="$(in_ns "$LAB_NS_INET" sysctl -n net.netfilter.nf_conntrack_udp_timeout_stream)"

    # home1
    LAB_WAN1=198.18.0.11
    local devs1=(dev1)
    [[ $LAB_SAME_NAT == 1 ]] && devs1+=(dev1b)
    _lab_home 1 "$nat1" "$LAB_NS_INET" home1 "$LAB_WAN1/24" "$LAB_INET_GW" "$LAB_HAIRPIN1" "${devs1[@]}"
    if [[ "$nat1" == none ]]; then
        LAB_LAN1_GW=198.18.1.1 LAB_DEV1=198.18.1.2 LAB_DEV1B=198.18.1.3 LAB_PUB1=""
        ip -n "$LAB_NS_INET" route add 198.18.1.0/24 via "$LAB_WAN1"
    else
        LAB_LAN1_GW=192.168.1.1 LAB_DEV1=192.168.1.2 LAB_DEV1B=192.168.1.3 LAB_PUB1="$LAB_WAN1"
    fi
    [[ $LAB_SAME_NAT == 1 ]] || LAB_DEV1B=""

    # home2, optionally behind the CGN
    if [[ -n "$LAB_CGN" ]]; then
        _lab_mkns "$LAB_NS_CGN" 1
        _lab_veth "$LAB_NS_CGN" wan "$LAB_NS_INET" cgn
        ip -n "$LAB_NS_INET" link set cgn master br0
        ip -n "$LAB_NS_CGN" addr add "$LAB_CGN_PUB/24" dev wan
        ip -n "$LAB_NS_CGN" route add default via "$LAB_INET_GW"
        LAB_WAN2=100.64.0.12
        _lab_home 2 "$nat2" "$LAB_NS_CGN" lan "$LAB_WAN2/24" "$LAB_CGN_LAN" "$LAB_HAIRPIN2" dev2
        ip -n "$LAB_NS_CGN" addr add "$LAB_CGN_LAN/24" dev lan
        _lab_router_nat "$LAB_NS_CGN" "$LAB_CGN" 0 "$LAB_CGN_PUB"
        LAB_PUB2="$LAB_CGN_PUB"
    else
        LAB_WAN2=198.18.0.12
        _lab_home 2 "$nat2" "$LAB_NS_INET" home2 "$LAB_WAN2/24" "$LAB_INET_GW" "$LAB_HAIRPIN2" dev2
        LAB_PUB2="$LAB_WAN2"
    fi
    if [[ "$nat2" == none ]]; then
        LAB_LAN2_GW=198.18.2.1 LAB_DEV2=198.18.2.2 LAB_PUB2=""
        ip -n "$LAB_NS_INET" route add 198.18.2.0/24 via "$LAB_WAN2"
    else
        LAB_LAN2_GW=192.168.2.1 LAB_DEV2=192.168.2.2
    fi
    # With type none the device's own address is its public address.
    [[ -n "$LAB_PUB1" ]] || LAB_PUB1="$LAB_DEV1"
    [[ -n "$LAB_PUB2" ]] || LAB_PUB2="$LAB_DEV2"
}

# lab_env : print the lab's variables (for a caller's log).
lab_env() {
    local v
    for v in LAB_NAT1 LAB_NAT2 LAB_CGN LAB_HAIRPIN1 LAB_HAIRPIN2 LAB_SAME_NAT LAB_SRV1 LAB_SRV2 \
        LAB_SRV3 LAB_SRV4 LAB_WAN1 LAB_WAN2 LAB_PUB1 LAB_PUB2 LAB_LAN1_GW LAB_DEV1 LAB_DEV1B \
        LAB_LAN2_GW LAB_DEV2 LAB_CGN_PUB LAB_UDP_TIMEOUT LAB_UDP_TIMEOUT_STREAM; do
        printf '%s=%s\n' "$v" "${!v}"
    done
}
