#!/usr/bin/env python3
"""The CPU of a 640x480@30 call in Debian's baresip, beside `peercom bench media` (issue 12).

Two baresip processes call each other over 127.0.0.1 (no SIP server: direct SIP URIs), driven
through ctrl_tcp (netstring JSON). Both play the same YUV4MPEG2 file through avformat, encode
H.264 with libx264 at --kbps, send Opus, and draw nothing (fakevideo display). CPU is read from
/proc/PID/stat over the talking time. With --peercom, each round also runs
`peercom bench media --camera-file` on the same file, alternating, and prints the ratio.

    tests/cpu/baresip.py --y4m src.y4m --seconds 10 --rounds 3 --peercom target/release/peercom
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def config(d, name, sip_port, ctrl_port, y4m, kbps):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config"), "w") as f:
        f.write(f"""poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_source ausine,440
audio_player aufile,/dev/null
audio_alert aufile,/dev/null
video_source avformat,{y4m}
video_display fakevideo,nil
video_size 640x480
video_bitrate {kbps * 1000}
video_fps 30
avcodec_h264enc libx264
avcodec_h264dec h264
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
module_path /usr/lib/baresip/modules
module stdio.so
module opus.so
module ausine.so
module aufile.so
module avcodec.so
module avformat.so
module fakevideo.so
module_app account.so
module_app ctrl_tcp.so
module_app menu.so
""")
    with open(os.path.join(d, "accounts"), "w") as f:
        f.write(f"<sip:{name}@127.0.0.1:{sip_port}>;regint=0;answermode=auto;audio_codecs=opus/48000/2;video_codecs=H264\n")


def ctrl(port, command, params=""):
    msg = json.dumps({"command": command, "params": params, "token": "t"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(str(len(msg)).encode() + b":" + msg + b",")
        s.settimeout(5)
        try:
            return s.recv(65536).decode(errors="replace")
        except socket.timeout:
            return ""


def baresip_call(y4m, seconds, kbps):
    tmp = tempfile.mkdtemp(prefix="peercom-baresip-")
    procs = []
    base = 20000 + os.getpid() % 20000
    ports = (("a", base, base + 2), ("b", base + 4, base + 6))
    try:
        for name, sip, ctl in ports:
            d = os.path.join(tmp, name)
            config(d, name, sip, ctl, y4m, kbps)
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            procs.append(subprocess.Popen(["baresip", "-f", d, "-t", "-n"], stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        for port in (ports[0][2], ports[1][2]):
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        a_ctl = ports[0][2]
        ctrl(a_ctl, "dial", f"sip:b@127.0.0.1:{ports[1][1]}")
        time.sleep(1.0)  # answer and first frames
        c0 = [cpu_s(p.pid) for p in procs]
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = [cpu_s(p.pid) for p in procs]
        wall = time.monotonic() - t0
        calls = ctrl(a_ctl, "listcalls")
        ctrl(a_ctl, "hangup")
        return round(100 * (sum(c1) - sum(c0)) / wall, 1), calls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP"):
            print("logs in", tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def peercom_call(binary, y4m, seconds, kbps):
    out = subprocess.run([binary, "bench", "media", "--seconds", str(seconds), "--camera-file", y4m,
                          "--video-kbps", str(kbps), "--json"],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    return r["cpu_pct"], r["bitrate_kbps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--y4m", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kbps", type=int, default=1000)
    ap.add_argument("--peercom")
    a = ap.parse_args()
    if not shutil.which("baresip"):
        sys.exit("baresip not found: apt-get install baresip-core baresip-ffmpeg")
    rows = []
    for i in range(a.rounds):
        b, calls = baresip_call(a.y4m, a.seconds, a.kbps)
        row = {"round": i + 1, "baresip_cpu_pct": b, "baresip_in_call": "H264" in calls or "ESTABLISHED" in calls.upper()}
        if a.peercom:
            p, kbps = peercom_call(a.peercom, a.y4m, a.seconds, a.kbps)
            row.update({"peercom_cpu_pct": p, "peercom_kbps": kbps, "ratio": round(p / b, 2) if b else None})
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary = {"baresip_cpu_pct_median": statistics.median(r["baresip_cpu_pct"] for r in rows)}
    if a.peercom:
        summary["peercom_cpu_pct_median"] = statistics.median(r["peercom_cpu_pct"] for r in rows)
        summary["ratio_median"] = round(summary["peercom_cpu_pct_median"] / summary["baresip_cpu_pct_median"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
