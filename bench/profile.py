#!/usr/bin/env python3
"""Where execwatch's BPF programs spend their time, by source line.

Runs the daemon (JSON to a file) and the benchmark's storm under
`perf record -a -g` (cpu-clock samples, so it works where the machine has no
PMU), then gives each sample that fell in execwatch's programs, or in a kernel
helper they called, to the line of BPF C it was on: the JIT's line table
(`jited_line_info`) and the program's BTF (source text and line numbers) are
read with the bpf() syscall while the daemon runs, so neither bpftool nor a
libbfd build of it is needed.

Samples are statistical: a line with a few samples says little; the lines
that take a tenth of a program do. The figure is the share of samples, and
the time per exec they stand for (samples x period / execs).

usage: scripts/bench --profile [--count N] [--top K] [--freq HZ] [--binary PATH]
"""
import argparse
import collections
import ctypes
import os
import shutil
import struct
import subprocess
import sys
import time

import run as R

PERF_DATA = os.path.join(R.WORK, "profile.data")

# struct bpf_prog_info (UAPI): offsets of the fields read here.
INFO_JITED_LEN, INFO_JITED_KSYMS_N, INFO_JITED_KSYMS = 16, 104, 112
INFO_FUNC_LENS_N, INFO_FUNC_LENS = 108, 120
INFO_BTF_ID, INFO_NR_LINE, INFO_LINE = 128, 148, 152
INFO_JITED_LINE, INFO_NR_JITED_LINE, INFO_LINE_REC, INFO_JITED_LINE_REC = 160, 168, 172, 176
INFO_NAME = 64
BPF_BTF_GET_FD_BY_ID = 19
# struct bpf_btf_info: btf (u64), btf_size (u32).
BTF_INFO_LEN = 32


def _info(fd, buf):
    attr = R._InfoByFd(bpf_fd=fd, info_len=len(buf), info=ctypes.addressof(buf))
    r, err = R._bpf(R.BPF_OBJ_GET_INFO_BY_FD, attr)
    if r < 0:
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(err)}")


def _fd_by_id(cmd, ident):
    fd, err = R._bpf(cmd, R._GetNextId(start_id=ident))
    if fd < 0:
        raise OSError(err, f"bpf({cmd}) id {ident}: {os.strerror(err)}")
    return fd


def btf_strings(btf_id):
    """The string section of a BTF object, by its kernel id."""
    fd = _fd_by_id(BPF_BTF_GET_FD_BY_ID, btf_id)
    try:
        head = ctypes.create_string_buffer(BTF_INFO_LEN)
        _info(fd, head)
        size = struct.unpack_from("<I", head.raw, 8)[0]
        blob = ctypes.create_string_buffer(size)
        info = ctypes.create_string_buffer(BTF_INFO_LEN)
        struct.pack_into("<QI", info, 0, ctypes.addressof(blob), size)
        _info(fd, info)
    finally:
        os.close(fd)
    raw = blob.raw
    hdr_len, _, _, str_off, str_len = struct.unpack_from("<IIIII", raw, 4)
    return raw[hdr_len + str_off:hdr_len + str_off + str_len]


def _cstr(strings, off):
    return strings[off:strings.index(b"\0", off)].decode(errors="replace")


def program_lines(prog_id):
    """(name, [(start, end)] of its functions' JIT images, [(address,
    "file:line  source")]) of one loaded program."""
    fd = _fd_by_id(R.BPF_PROG_GET_FD_BY_ID, prog_id)
    try:
        first = ctypes.create_string_buffer(R.PROG_INFO_LEN)
        _info(fd, first)
        raw = first.raw
        name = raw[INFO_NAME:INFO_NAME + 16].split(b"\0", 1)[0].decode(errors="replace")
        jited_len = struct.unpack_from("<I", raw, INFO_JITED_LEN)[0]
        nksyms = struct.unpack_from("<I", raw, INFO_JITED_KSYMS_N)[0]
        btf_id = struct.unpack_from("<I", raw, INFO_BTF_ID)[0]
        nline = struct.unpack_from("<I", raw, INFO_NR_LINE)[0]
        rec = struct.unpack_from("<I", raw, INFO_LINE_REC)[0]
        if not (jited_len and nksyms and nline and btf_id):
            return name, [], []
        lines = ctypes.create_string_buffer(nline * rec)
        jlines = ctypes.create_string_buffer(nline * 8)
        ksyms = ctypes.create_string_buffer(nksyms * 8)
        lens = ctypes.create_string_buffer(nksyms * 4)
        info = ctypes.create_string_buffer(R.PROG_INFO_LEN)
        struct.pack_into("<I", info, INFO_JITED_KSYMS_N, nksyms)
        struct.pack_into("<Q", info, INFO_JITED_KSYMS, ctypes.addressof(ksyms))
        struct.pack_into("<I", info, INFO_FUNC_LENS_N, nksyms)
        struct.pack_into("<Q", info, INFO_FUNC_LENS, ctypes.addressof(lens))
        struct.pack_into("<I", info, INFO_NR_LINE, nline)
        struct.pack_into("<Q", info, INFO_LINE, ctypes.addressof(lines))
        struct.pack_into("<Q", info, INFO_JITED_LINE, ctypes.addressof(jlines))
        struct.pack_into("<I", info, INFO_NR_JITED_LINE, nline)
        struct.pack_into("<I", info, INFO_LINE_REC, rec)
        struct.pack_into("<I", info, INFO_JITED_LINE_REC, 8)
        _info(fd, info)
    finally:
        os.close(fd)
    strings = btf_strings(btf_id)
    # A function called from the program (not inlined) has an image of its own.
    ranges = []
    for i in range(nksyms):
        start = struct.unpack_from("<Q", ksyms.raw, i * 8)[0]
        ranges.append((start, start + struct.unpack_from("<I", lens.raw, i * 4)[0]))
    table = []
    for i in range(nline):
        # struct bpf_line_info: insn_off, file_name_off, line_off, line_col.
        _, file_off, line_off, line_col = struct.unpack_from("<IIII", lines.raw, i * rec)
        addr = struct.unpack_from("<Q", jlines.raw, i * 8)[0]
        where = f"{os.path.basename(_cstr(strings, file_off))}:{line_col >> 10}"
        table.append((addr, f"{where:<18} {_cstr(strings, line_off).strip()[:90]}"))
    table.sort()
    return name, ranges, table


def execwatch_programs(pid):
    """Every program the daemon `pid` holds open, with its line table."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    progs = [p for p in (program_lines(i) for i in sorted(ids)) if p[2]]
    if any(start == 0 for _, ranges, _ in progs for start, _ in ranges):
        raise SystemExit("the kernel gives no JIT addresses (kernel.kptr_restrict=2, or the JIT is off):"
                         " samples cannot be mapped to lines")
    return progs


def locate(progs, ip):
    """(program name, source line) of an address inside a program, or None."""
    for name, ranges, table in progs:
        if any(start <= ip < end for start, end in ranges):
            lo, hi = 0, len(table)
            while lo < hi:
                mid = (lo + hi) // 2
                if table[mid][0] <= ip:
                    lo = mid + 1
                else:
                    hi = mid
            return name, table[lo - 1][1] if lo else "(prologue)"
    return None


def attribute(progs, script_out):
    """{(program, line): samples}, {program: samples}, helper samples by name.
    A sample's first frame inside a program names the line; a helper's own
    frames above it name the helper."""
    by_line, by_prog, helpers = collections.Counter(), collections.Counter(), collections.Counter()
    for sample in script_out.split("\n\n"):
        frames = []
        for line in sample.strip().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and all(c in "0123456789abcdef" for c in parts[0]):
                frames.append((int(parts[0], 16), parts[1]))
        for depth, (ip, sym) in enumerate(frames):
            hit = locate(progs, ip)
            if hit:
                by_line[hit] += 1
                by_prog[hit[0]] += 1
                if depth:
                    helpers[(hit[0], frames[0][1].split("+")[0])] += 1
                break
    return by_line, by_prog, helpers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000, help="execs per storm worker (2 workers)")
    ap.add_argument("--top", type=int, default=12, help="lines shown per program")
    ap.add_argument("--freq", type=int, default=20000, help="samples per second per CPU")
    ap.add_argument("--binary", default=R.EXECWATCH, help="the execwatch to profile (another build, say)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/profile.py loads BPF programs and runs perf -a: run it as root (scripts/bench --profile)")
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed: apt-get install linux-perf (scripts/bench --profile installs it)")
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} missing: cargo build --release")
    R.build()
    # perf refuses a rate above the kernel's limit: raise it for this run only.
    rate_path = "/proc/sys/kernel/perf_event_max_sample_rate"
    with open(rate_path) as f:
        rate_before = int(f.read().strip())
    tracer = R.Tracer("ew-profile", "execwatch", binary=args.binary)
    tracer.start("profile")
    raised = False
    try:
        if args.freq > rate_before:
            with open(rate_path, "w") as f:
                f.write(str(args.freq))
            raised = True
        try:
            progs = execwatch_programs(tracer.proc.pid)
        except OSError as e:
            raise SystemExit(f"reading execwatch's programs: {e}")
        if not progs:
            raise SystemExit("no line table for execwatch's programs: is the kernel's BTF missing?")
        workers = 2
        rec = subprocess.run(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", str(args.freq),
                              "-o", PERF_DATA, "--", R.STORM, str(workers), str(args.count), "16", "64",
                              R.NOOP, "profile"], capture_output=True, text=True)
        if rec.returncode != 0:
            last = (rec.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"perf record failed: {last}")
        execs = workers * args.count
        # Read while the programs are still loaded, so their addresses hold.
        script = subprocess.run(["perf", "script", "-i", PERF_DATA, "-F", "ip,sym,symoff"],
                                capture_output=True, text=True)
        if script.returncode != 0:
            last = (script.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"perf script failed: {last}")
        script = script.stdout
        time.sleep(0.2)
    finally:
        if raised:
            with open(rate_path, "w") as f:
                f.write(str(rate_before))
        tracer.stop()
    by_line, by_prog, helpers = attribute(progs, script)
    period_ns = 1e9 / args.freq
    print(f"{execs} execs, {sum(by_prog.values())} samples in execwatch's programs and the helpers they called"
          f" (cpu-clock, {args.freq} Hz; a sample stands for {period_ns / 1000:.0f} us)\n")
    for prog, n in by_prog.most_common():
        print(f"## {prog}: {n} samples, about {n * period_ns / execs:.0f} ns per exec\n")
        print("| samples | share | ns per exec | line |\n|---|---|---|---|")
        lines = [(k[1], v) for k, v in by_line.items() if k[0] == prog]
        for line, v in sorted(lines, key=lambda x: -x[1])[:args.top]:
            print(f"| {v} | {100 * v / n:.1f}% | {v * period_ns / execs:.0f} | `{line}` |")
        called = [(h, v) for (p, h), v in helpers.items() if p == prog]
        if called:
            print("\nin helpers: " + ", ".join(f"{h} {100 * v / n:.1f}%" for h, v in
                                              sorted(called, key=lambda x: -x[1])[:8]))
        print()


if __name__ == "__main__":
    main()
