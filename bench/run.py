#!/usr/bin/env python3
"""Exec-storm benchmark: execwatch against no tracer and bpftrace's execsnoop.bt.

Each round starts a tracer, runs a fixed exec storm (static no-op, fixed argv),
waits until the tracer has written what it got, reads its CPU time, peak RSS and
the kernel's BPF run time, and stops it. Tracers alternate round by round and
the report gives medians. Run as root via scripts/bench.
"""

import argparse
import ctypes
import datetime
import errno
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
EXECWATCH = os.path.join(ROOT, "target", "release", "execwatch")
NOOP = os.path.join(WORK, "noop")
STORM = os.path.join(WORK, "storm")
WAKE = os.path.join(WORK, "wake")
TRACEFS = "/sys/kernel/tracing"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build():
    os.makedirs(WORK, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-static", "-o", NOOP, os.path.join(ROOT, "bench", "noop.c")], check=True)
    subprocess.run(["gcc", "-O2", "-o", STORM, os.path.join(ROOT, "bench", "storm.c")], check=True)
    subprocess.run(["gcc", "-O2", "-pthread", "-o", WAKE, os.path.join(ROOT, "bench", "wake.c")], check=True)


def noop_on_overlay():
    """Put the storm's program on an overlayfs lower layer, as a container
    image's file, and return its path there and the unmount."""
    base = os.path.join(WORK, "overlay")
    lower, upper, work, merged = (os.path.join(base, n) for n in ("lower", "upper", "work", "merged"))
    subprocess.run(["umount", merged], stderr=subprocess.DEVNULL, check=False)
    for d in (lower, upper, work, merged):
        os.makedirs(d, exist_ok=True)
    shutil.copy2(NOOP, os.path.join(lower, "noop"))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", merged], check=True)
    return os.path.join(merged, "noop"), lambda: subprocess.run(["umount", merged], check=False)


def execsnoop_bt():
    for p in ("/usr/sbin/execsnoop.bt", "/usr/share/bpftrace/tools/execsnoop.bt"):
        if os.path.exists(p):
            return p
    return None


def ensure_tracefs():
    """bpftrace's execsnoop.bt attaches classic tracepoints, which need tracefs."""
    if os.path.exists(os.path.join(TRACEFS, "events")):
        return
    log(f"mounting tracefs at {TRACEFS} (needed by bpftrace's execsnoop.bt only)")
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)


def cpu_by_thread(pid):
    """On-CPU time (user + system, ns) and times scheduled in, of pid's
    threads by name, from schedstat; numbered workers (exe-hash-0,
    exe-hash-1) count as one."""
    by = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = re.sub(r"-\d+$", "", f.read().strip())
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            ns, runs = by.get(name, (0, 0))
            by[name] = (ns + int(fields[0]), runs + int(fields[2]))
        except FileNotFoundError:
            pass
    return by


def wake_cost():
    """bench/wake.c's line per case: what a thread woken from another CPU,
    and from its own, costs on this machine. A failure is reported, not
    fatal: it only explains the figures."""
    r = subprocess.run([WAKE], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"bench/wake.c failed: {r.stderr.strip()}")
        return ["not measured (bench/wake.c failed)"]
    return [line for line in r.stdout.splitlines() if line]


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def rss_without_bpf_maps_kib(pid):
    """Resident memory now, less BPF map mappings (the ring buffer is mapped
    twice: its data pages appear two times in RSS)."""
    total, current_is_map = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:
                current_is_map = "bpf-map" in line or "bpf_ringbuf" in line
            elif fields and fields[0] == "Rss:" and not current_is_map:
                total += int(fields[1])
    return total


class _GetNextId(ctypes.Structure):
    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


_LIBC = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 11, 13, 15
# struct bpf_prog_info (UAPI, so fixed): name at byte 64, run_time_ns at 192,
# run_cnt at 200.
PROG_INFO_LEN = 208


def _bpf(cmd, attr):
    r = _LIBC.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), ctypes.byref(attr),
                      ctypes.c_uint(ctypes.sizeof(attr)))
    return r, (ctypes.get_errno() if r < 0 else 0)


def bpf_run_ns():
    """run_time_ns and run_cnt by program id (bpf_stats_enabled=1), read with
    the bpf() syscall: running bpftool here would put an exec inside the
    measured window, and execwatch's hashing of bpftool with it."""
    if _SYS_BPF is None:
        sys.exit(f"bench: the bpf() syscall number for {platform.machine()} is not known here")
    progs, next_id = {}, 0
    while True:
        attr = _GetNextId(start_id=next_id)
        r, err = _bpf(BPF_PROG_GET_NEXT_ID, attr)
        if r < 0:
            if err == errno.ENOENT:
                return progs
            raise OSError(err, f"BPF_PROG_GET_NEXT_ID: {os.strerror(err)}")
        next_id = attr.next_id
        fd, err = _bpf(BPF_PROG_GET_FD_BY_ID, _GetNextId(start_id=next_id))
        if fd < 0:
            if err == errno.ENOENT:
                continue  # unloaded meanwhile
            raise OSError(err, f"BPF_PROG_GET_FD_BY_ID: {os.strerror(err)}")
        try:
            info = ctypes.create_string_buffer(PROG_INFO_LEN)
            attr = _InfoByFd(bpf_fd=fd, info_len=PROG_INFO_LEN, info=ctypes.addressof(info))
            r, err = _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
            if r < 0:
                raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(err)}")
        finally:
            os.close(fd)
        raw = info.raw
        name = raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
        progs[next_id] = (name or "?", int.from_bytes(raw[192:200], "little"),
                          int.from_bytes(raw[200:208], "little"))


def bpf_stats_on():
    """Turn the kernel's BPF run-time accounting on; returns what to restore."""
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        before = f.read().strip()
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    return before


def bpf_stats_restore(before):
    subprocess.run(["sysctl", "-q", f"kernel.bpf_stats_enabled={before}"], check=False)


def bpf_delta(before, after):
    """{program name: (ns, runs)} of what ran between two snapshots."""
    d = {}
    for pid, (name, ns, cnt) in after.items():
        b = before.get(pid, (name, 0, 0))
        if cnt - b[2] > 0:
            old = d.get(name, (0, 0))
            d[name] = (old[0] + ns - b[1], old[1] + cnt - b[2])
    return d


class Tracer:
    def __init__(self, name, kind, extra=(), output="file", binary=None):
        self.name, self.kind, self.extra, self.output = name, kind, list(extra), output
        self.binary = binary or EXECWATCH

    def start(self, marker):
        self.out_path = os.path.join(WORK, f"out-{self.name}.log")
        self.err_path = os.path.join(WORK, f"err-{self.name}.log")
        out = open(os.devnull, "wb") if self.output == "null" else open(self.out_path, "wb")
        err = open(self.err_path, "wb")
        if self.kind == "execwatch":
            cmd = [self.binary, "--format", "json"] + self.extra
            ready = (self.err_path, "execwatch attached")
        else:
            ensure_tracefs()
            cmd = [shutil.which("bpftrace"), execsnoop_bt()]
            ready = (self.out_path, "PID")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited at start: {open(self.err_path).read()}")
            with open(ready[0], "rb") as f:
                if ready[1].encode() in f.read():
                    return
            time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start")

    def delivered(self, marker):
        if self.output == "null":
            return None
        # The storm's own exec carries the marker too: count the no-op's only.
        m = marker.encode()
        with open(self.out_path, "rb") as f:
            # Exec events only: execwatch's exit events carry the argv of
            # what ended (bpftrace prints execs only).
            exec_only = self.kind != "execwatch" or None
            return sum(1 for line in f
                       if m in line and b"/storm " not in line
                       and (exec_only or b'"action":"exec"' in line))

    def wait_delivered(self, marker, want):
        """Wait until the tracer wrote all it will write (or 5 s)."""
        if self.output == "null":
            time.sleep(0.4)  # > poll interval: the daemon has drained
            return
        deadline = time.time() + 5
        last, stable_since = -1, time.time()
        while time.time() < deadline:
            n = self.delivered(marker)
            if n >= want:
                return
            if n != last:
                last, stable_since = n, time.time()
            elif time.time() - stable_since > 1.0:
                return
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM if self.kind == "execwatch" else signal.SIGINT)
        self.proc.wait(timeout=60)
        with open(self.err_path, "rb") as f:
            err = f.read().decode(errors="replace")
        summary = {}
        if self.kind == "execwatch":
            for line in err.splitlines():
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if v.get("message") == "summary":
                    summary = v
        else:
            out = open(self.out_path, "rb").read().decode(errors="replace")
            lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", out + err))
            summary = {"lost_total": lost}
        return summary


def storm(workers, count, nargs, arglen, marker):
    out = subprocess.run([STORM, str(workers), str(count), str(nargs), str(arglen), NOOP, marker],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def one_round(tracer, workers, count, nargs, arglen, seq):
    marker = f"bench-{os.getpid()}-{seq}"
    res = {}
    if tracer is not None:
        tracer.start(marker)
    bpf0 = bpf_run_ns()
    thr0 = cpu_by_thread(tracer.proc.pid) if tracer else {}
    execs, secs = storm(workers, count, nargs, arglen, marker)
    progs = bpf_delta(bpf0, bpf_run_ns())
    res.update(execs=execs, secs=secs, rate=execs / secs,
               bpf_ns=sum(ns for ns, _ in progs.values()) / execs, progs=progs)
    if tracer is not None:
        tracer.wait_delivered(marker, execs)
        thr1 = cpu_by_thread(tracer.proc.pid)
        res["threads"] = {n: (ns - thr0.get(n, (0, 0))[0]) / execs for n, (ns, _) in thr1.items()}
        res["runs"] = {n: (runs - thr0.get(n, (0, 0))[1]) * 1000 / execs for n, (_, runs) in thr1.items()}
        res["cpu_ns"] = sum(res["threads"].values())
        res["rss_kib"] = peak_rss_kib(tracer.proc.pid)
        res["rss_nomap_kib"] = rss_without_bpf_maps_kib(tracer.proc.pid)
        summary = tracer.stop()
        res["delivered"] = tracer.delivered(marker)  # after the final drain
        res["lost"] = summary.get("lost_total", 0)
        if tracer.kind == "execwatch" and res["delivered"] is None:
            res["delivered_total"] = summary.get("events")
    return res


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def run_matrix(name, tracers, rounds, workers, count, nargs, arglen, seq):
    """Alternate the tracers round by round; return {tracer: [results]}."""
    results = {t: [] for t in tracers}
    order = list(tracers.items())
    shuffle = random.Random(len(name) * 7919 + rounds)  # fixed seed: reproducible orders
    for r in range(rounds):
        shuffle.shuffle(order)  # no tracer always runs first (cold) or last
        for tname, tracer in order:
            seq[0] += 1
            res = one_round(tracer, workers, count, nargs, arglen, seq[0])
            results[tname].append(res)
            log(f"{name} round {r + 1}/{rounds} {tname}: {res['rate']:.0f} exec/s"
                + (f", cpu {res['cpu_ns'] / 1000:.2f} us/exec, bpf {res['bpf_ns'] / 1000:.2f} us/exec,"
                   f" delivered {res['delivered']}, lost {res['lost']}" if tname != "none" else ""))
    return results


def fmt(v, scale=1.0, digits=2, suffix=""):
    return "-" if v is None else f"{v / scale:.{digits}f}{suffix}"


def ratio(results, tname):
    """Median over rounds of traced/untraced exec rate, each pair from the same
    round: the machine's exec rate drifts, adjacent runs drift least."""
    pairs = [t["rate"] / n["rate"] for t, n in zip(results[tname], results["none"])]
    return statistics.median(pairs)


def table(results, execs, base_rate):
    lines = ["| tracer | exec/s (median) | vs untraced (median of per-round ratios) | BPF time per exec | tracer CPU per exec | delivered / execs | lost | peak RSS | RSS less BPF maps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for tname, rows in results.items():
        rate = med(rows, "rate")
        delivered = [r.get("delivered") for r in rows]
        dsum = sum(d for d in delivered if d is not None) if any(d is not None for d in delivered) else None
        lost = sum(r.get("lost", 0) or 0 for r in rows)
        lines.append(
            f"| {tname} | {rate:.0f} | {ratio(results, tname):.3f} | {fmt(med(rows, 'bpf_ns'), 1000, 2, ' us')} "
            f"| {fmt(med(rows, 'cpu_ns'), 1000, 2, ' us')} "
            f"| {'-' if tname == 'none' else (f'{dsum} / {execs * len(rows)}' if dsum is not None else '-')} "
            f"| {'-' if tname == 'none' else lost} "
            f"| {fmt(med(rows, 'rss_kib'), 1024, 1, ' MiB')} | {fmt(med(rows, 'rss_nomap_kib'), 1024, 1, ' MiB')} |")
    return "\n".join(lines)


def thread_table(results):
    """Daemon CPU per exec by thread, medians over rounds: the event loop
    (the main thread, named after the binary), the writer, the hashers; and
    how often each was scheduled in (each time is a wakeup or a preemption)."""
    lines = ["| tracer | thread | CPU per exec | times run per 1000 execs |", "|---|---|---|---|"]
    for tname, rows in results.items():
        if not tname.startswith("execwatch"):
            continue
        names = sorted({n for r in rows for n in r.get("threads", {})})
        for n in names:
            v = statistics.median(r["threads"].get(n, 0) for r in rows if "threads" in r)
            runs = statistics.median(r["runs"].get(n, 0) for r in rows if "runs" in r)
            lines.append(f"| {tname} | {n} | {v / 1000:.2f} us | {runs:.1f} |")
    return "\n".join(lines)


def prog_table(rows, execs):
    """Per-program BPF time of a tracer: medians over rounds."""
    names = sorted({n for r in rows for n in r["progs"]})
    lines = ["| program | runs per exec | ns per run | us per exec |", "|---|---|---|---|"]
    for n in names:
        per_run = statistics.median(r["progs"][n][0] / r["progs"][n][1] for r in rows if n in r["progs"])
        runs = statistics.median(r["progs"][n][1] / execs for r in rows if n in r["progs"])
        lines.append(f"| {n} | {runs:.2f} | {per_run:.0f} | {per_run * runs / 1000:.2f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--count", type=int, default=1500, help="execs per worker per round")
    ap.add_argument("--quick", action="store_true", help="main comparison only, 3 rounds")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--baseline", help="another execwatch binary (an older build) run beside this one")
    ap.add_argument("--variants", action="store_true",
                    help="also run execwatch with --no-exits --no-hash, and with --env LD_PRELOAD")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py loads BPF programs: run it as root (scripts/bench)")
    if not os.path.exists(EXECWATCH):
        raise SystemExit(f"{EXECWATCH} missing: cargo build --release")
    build()
    wakes = wake_cost()
    stats_before = bpf_stats_on()
    seq = [0]
    report = []
    try:
        rounds = 3 if args.quick else args.rounds
        workers, count = 2, args.count
        execs = workers * count
        tracers = {"none": None,
                   "execwatch (json to file)": Tracer("ew-file", "execwatch"),
                   "execwatch (json to /dev/null)": Tracer("ew-null", "execwatch", output="null")}
        if args.baseline:
            tracers["execwatch baseline (json to file)"] = Tracer("ew-base", "execwatch", binary=args.baseline)
        if args.variants:
            tracers["execwatch --no-exits --no-hash"] = Tracer("ew-noexit", "execwatch", ["--no-exits", "--no-hash"])
            tracers["execwatch --env LD_PRELOAD"] = Tracer("ew-env", "execwatch", ["--env", "LD_PRELOAD"])
        if execsnoop_bt() and shutil.which("bpftrace"):
            tracers["bpftrace execsnoop.bt"] = Tracer("bpftrace", "bpftrace")
        else:
            log("bpftrace or execsnoop.bt not installed: skipped (scripts/bench installs it)")
        res = run_matrix("main", tracers, rounds, workers, count, 16, 64, seq)
        base = med(res["none"], "rate")
        report.append(f"### Main comparison: {workers} workers x {count} fork+exec, argv 16 x 64 B, {rounds} rounds\n")
        report.append(table(res, execs, base))
        report.append("\nexecwatch's CPU by thread (the main thread, named after its binary, runs the"
                      " event loop; `output` writes; `exe-hash` hashes executables, each once per daemon):\n")
        report.append(thread_table(res))
        for tname in tracers:
            if tname != "none":
                report.append(f"\nBPF programs of {tname}:\n")
                report.append(prog_table(res[tname], execs))

        if not args.quick:
            report.append("\n### Cost by argv size (2 workers, execwatch json to file, 3 rounds)\n")
            lines = ["| argv | exec/s untraced | exec/s traced | vs untraced | BPF time per exec | tracer CPU per exec | delivered / execs | lost |",
                     "|---|---|---|---|---|---|---|---|"]
            for nargs, arglen in ((1, 8), (16, 64), (64, 1024)):
                r = run_matrix(f"argv {nargs}x{arglen}",
                               {"none": None, "execwatch": Tracer("ew-argv", "execwatch", ["--max-args-bytes", "128KiB"])},
                               3, workers, count, nargs, arglen, seq)
                b, t = med(r["none"], "rate"), med(r["execwatch"], "rate")
                d = sum(x["delivered"] for x in r["execwatch"])
                lines.append(f"| {nargs} x {arglen} B | {b:.0f} | {t:.0f} | {ratio(r, 'execwatch'):.3f} | {fmt(med(r['execwatch'], 'bpf_ns'), 1000, 2, ' us')} "
                             f"| {fmt(med(r['execwatch'], 'cpu_ns'), 1000, 2, ' us')} | {d} / {execs * 3} | {sum(x['lost'] for x in r['execwatch'])} |")
            report.append("\n".join(lines))

            report.append("\n### Ring buffer size (2 workers, argv 16 x 64 B, json to file, 3 rounds)\n")
            lines = ["| ring buffer | exec/s | delivered / execs | lost | tracer CPU per exec | peak RSS | RSS less BPF maps |", "|---|---|---|---|---|---|---|"]
            for size in ("64KiB", "256KiB", "1MiB", "8MiB"):
                r = run_matrix(f"ring {size}", {"execwatch": Tracer("ew-ring", "execwatch", ["--ring-buffer-size", size])},
                               3, workers, count, 16, 64, seq)["execwatch"]
                lines.append(f"| {size} | {med(r, 'rate'):.0f} | {sum(x['delivered'] for x in r)} / {execs * 3} | {sum(x['lost'] for x in r)} "
                             f"| {fmt(med(r, 'cpu_ns'), 1000, 2, ' us')} | {fmt(med(r, 'rss_kib'), 1024, 1, ' MiB')} | {fmt(med(r, 'rss_nomap_kib'), 1024, 1, ' MiB')} |")
            report.append("\n".join(lines))

            report.append("\n### Workers (argv 16 x 64 B, json to file, 3 rounds)\n")
            lines = ["| workers | exec/s untraced | exec/s traced | vs untraced | BPF time per exec | tracer CPU per exec | lost |", "|---|---|---|---|---|---|---|"]
            for w in (1, 2):
                r = run_matrix(f"workers {w}", {"none": None, "execwatch": Tracer("ew-w", "execwatch")},
                               3, w, execs // w, 16, 64, seq)
                b, t = med(r["none"], "rate"), med(r["execwatch"], "rate")
                lines.append(f"| {w} | {b:.0f} | {t:.0f} | {ratio(r, 'execwatch'):.3f} | {fmt(med(r['execwatch'], 'bpf_ns'), 1000, 2, ' us')} "
                             f"| {fmt(med(r['execwatch'], 'cpu_ns'), 1000, 2, ' us')} | {sum(x['lost'] for x in r['execwatch'])} |")
            report.append("\n".join(lines))
    finally:
        bpf_stats_restore(stats_before)

    head = (f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
            f"{os.cpu_count()} CPUs, kernel {platform.release()}, "
            f"{subprocess.run([EXECWATCH, '--version'], capture_output=True, text=True).stdout.strip()}.\n\n"
            "A thread's wakeup on this machine (`bench/wake.c`; each of the daemon's threads is woken"
            " once per batch): " + "; ".join(wakes) + ".\n")
    text = head + "\n" + "\n".join(report) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
