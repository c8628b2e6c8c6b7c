#!/usr/bin/env bash
# The birthday punch with real kernel NAT (the lab in lab.sh): three `peercom node --relay`
# processes on the "internet", device A behind home1, device B behind home2, keys only. The
# caller places a call; the script samples both devices' status every 250 ms and reports when
# the call connected (through the relay) and when both sides were on a direct path, with the
# aux socket the random side sends from. Then it hangs up and checks that the aux socket closes
# once the session has timed out (30 s). Needs root, nft and a built peercom binary.
#
#   tests/nat/birthday.sh [NAT1 [NAT2 [CALLER]]]     # default: symmetric port-restricted A
#
# Exits non-zero unless the call ends on a direct path (or, for symmetric-symmetric, stays on
# the relay) within 6 s of the call, and every aux socket is closed 40 s after hanging up.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
nat1="${1:-symmetric}" nat2="${2:-port-restricted}" caller="${3:-A}"
bin="${PEERCOM_BIN:-$here/../../target/debug/peercom}"
[[ -x "$bin" ]] || { echo "no peercom binary at $bin (cargo build -p peercom)" >&2; exit 2; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

export LAB_ID="${LAB_ID:-bday}"
# shellcheck source-path=SCRIPTDIR source=lab.sh
source "$here/lab.sh"
LAB_QUIET=1
tmp="$(mktemp -d)"
cleanup() { lab_down; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
lab_up "$nat1" "$nat2"

for n in 2 3 4; do
    ip="LAB_SRV$n" boot=()
    [[ $n == 2 ]] || boot=(--bootstrap "$LAB_SRV2:7600")
    lab_spawn inet "$tmp/node$n.log" "$bin" node --listen "${!ip}:7600" --state "$tmp/node$n.state" --relay "${boot[@]}"
    lab_wait_file "$tmp/node$n.log" "ready" 10
done
id_a="$("$bin" keygen --out "$tmp/A.key" | grep -o 'pc1[a-z0-9]*')"
id_b="$("$bin" keygen --out "$tmp/B.key" | grep -o 'pc1[a-z0-9]*')"
config() { # NAME PEER_NAME PEER_ID
    cat >"$tmp/$1.toml" <<EOF
[device]
name = "$1"
key = "$1.key"
listen = "0.0.0.0:7600"
control = "$tmp/$1.sock"

[buttons]
answer = 0

[call]
auto_answer = true

[network]
bootstrap = ["$LAB_SRV2:7600", "$LAB_SRV3:7600", "$LAB_SRV4:7600"]
lan_discovery = false

[[contact]]
name = "$2"
button = 1
  [[contact.device]]
  key = "$3"
EOF
}
config A B "$id_b"
config B A "$id_a"
lab_spawn dev1 "$tmp/A.log" "$bin" run --config "$tmp/A.toml" --board sim
lab_spawn dev2 "$tmp/B.log" "$bin" run --config "$tmp/B.toml" --board sim
lab_wait_file "$tmp/A.log" "announced" 20
lab_wait_file "$tmp/B.log" "announced" 20
# NAT classes need samples from at least two reporters: a few DHT rounds.
sleep 3

status() { "$bin" ctl --socket "$tmp/$1.sock" status; }
# One line per device: state, path class, address and socket, birthday counters.
cat >"$tmp/summary.py" <<'EOF'
import json, sys
s = json.load(sys.stdin); n = s["network"]; p = n["path"]; b = n["birthday"]
path = f"{p['class']} {p['addr']} sock {p['sock']}" if p else "-"
print(f"{sys.argv[1]} {n['nat']:<10} {s['state']:<8} {path:<36} punches {b['started']}/{b['succeeded']}/"
      f"{b['failed']} probes {b['probes']} aux {b['aux_open']} (peak {b['aux_peak']})")
EOF
summary() { status "$1" | python3 "$tmp/summary.py" "$1"; }
other=B
[[ $caller == B ]] && other=A
t0="$EPOCHREALTIME"
"$bin" ctl --socket "$tmp/$caller.sock" call "$other" >/dev/null
connected="" direct=""
for _ in $(seq 24); do
    sleep 0.25
    t="$(python3 -c "print(f'{$EPOCHREALTIME - $t0:.2f}')")"
    a="$(summary A)" b="$(summary B)"
    [[ -z "$connected" && "$a" == *in-call* && "$b" == *in-call* ]] && connected="$t"
    [[ -z "$direct" && "$a" == *" direct "* && "$b" == *" direct "* ]] && direct="$t"
    printf '%5s s  %s\n          %s\n' "$t" "$a" "$b"
done
aux_before="$(in_ns dev1 ss -Huan | wc -l) $(in_ns dev2 ss -Huan | wc -l)"
"$bin" ctl --socket "$tmp/$caller.sock" hangup >/dev/null
sleep 40
aux_after="$(in_ns dev1 ss -Huan | wc -l) $(in_ns dev2 ss -Huan | wc -l)"
echo "$nat1 ($caller calls) -> $nat2: connected ${connected:-never} s, direct ${direct:-never} s;" \
    "UDP sockets (A B) in the call: $aux_before, 40 s after hanging up: $aux_after"
ok=1
[[ -n "$connected" ]] || ok=0
if [[ $nat1 == symmetric && $nat2 == symmetric ]]; then [[ -z "$direct" ]] || ok=0; else [[ -n "$direct" ]] || ok=0; fi
[[ "$aux_after" == "1 1" ]] || ok=0
if [[ $ok == 1 ]]; then echo ok; else echo FAILED; exit 1; fi
