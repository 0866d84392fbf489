#!/usr/bin/env python3
"""Two or more execwatch builds against each other, round by round.

Each round runs the benchmark's storm once under each build, in turn, and
the report gives, per build, the mean and median BPF time and daemon CPU per
exec, and against the first build the median of the per-round ratios, for
the whole and per program. On a machine whose speed drifts, the ratio of two
builds measured in the same round is steadier than either figure, and the
programs a change does not touch show the drift between the builds' turns.

usage: scripts/bench --ab [--rounds N] [--count N] [--overlay] NAME=BINARY[:ARGS] ...
  e.g. scripts/bench --ab --rounds 16 old=/tmp/execwatch-old new=target/release/execwatch
"""
import argparse
import os
import statistics

import run as R


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--count", type=int, default=2000, help="execs per storm worker (2 workers)")
    ap.add_argument("--overlay", action="store_true",
                    help="run the storm's program from an overlayfs lower layer, as in a container")
    ap.add_argument("builds", nargs="+", metavar="NAME=BINARY[:ARGS]",
                    help="a name, the binary, and optional arguments after a colon")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/ab.py loads BPF programs: run it as root (scripts/bench --ab)")
    if len(args.builds) < 2:
        raise SystemExit("bench/ab.py compares builds: give at least two NAME=BINARY")
    tracers = {}
    for spec in args.builds:
        name, sep, rest = spec.partition("=")
        binary, _, extra = rest.partition(":")
        if not sep or not name or not binary:
            raise SystemExit(f"bench/ab.py: {spec!r} is not NAME=BINARY[:ARGS]")
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"bench/ab.py: {binary} is not an executable file")
        if name in tracers:
            raise SystemExit(f"bench/ab.py: the name {name!r} is given twice")
        tracers[name] = R.Tracer(f"ab-{name}", "execwatch", extra.split(), binary=binary)
    R.build()
    unmount = None
    if args.overlay:
        R.NOOP, unmount = R.noop_on_overlay()
    stats_before = R.bpf_stats_on()
    results = {n: [] for n in tracers}
    try:
        for r in range(args.rounds):
            for i, (n, t) in enumerate(tracers.items()):
                x = R.one_round(t, 2, args.count, 16, 64, r * len(tracers) + i)
                results[n].append(x)
                progs = " ".join(f"{p}={ns / max(c, 1):.0f}" for p, (ns, c) in sorted(x["progs"].items()))
                R.log(f"round {r}: {n} BPF {x['bpf_ns'] / 1000:.3f} us, daemon {x['cpu_ns'] / 1000:.2f} us"
                      f" per exec; ns per run {progs}; delivered {x['delivered']}, lost {x['lost']}")
    finally:
        R.bpf_stats_restore(stats_before)
        if unmount:
            unmount()

    where = ", the program on an overlayfs lower layer" if args.overlay else ""
    print(f"{args.rounds} rounds of 2 x {args.count} execs{where}, the builds in turn\n")
    print("| build | BPF per exec: mean / median | daemon CPU per exec: mean / median | delivered | lost |")
    print("|---|---|---|---|---|")
    for n, rows in results.items():
        b = [x["bpf_ns"] / 1000 for x in rows]
        c = [x["cpu_ns"] / 1000 for x in rows]
        print(f"| {n} | {statistics.mean(b):.2f} / {statistics.median(b):.2f} us"
              f" | {statistics.mean(c):.2f} / {statistics.median(c):.2f} us"
              f" | {sum(x['delivered'] or 0 for x in rows)} / {sum(x['execs'] for x in rows)}"
              f" | {sum(x['lost'] for x in rows)} |")
    first = next(iter(results))
    print(f"\nMedian of the per-round ratios to {first}:\n")
    for n in list(results)[1:]:
        pairs = list(zip(results[n], results[first]))
        line = [f"BPF per exec {statistics.median(x['bpf_ns'] / y['bpf_ns'] for x, y in pairs):.3f}"]
        for p in sorted(results[first][0]["progs"]):
            ratios = [(x["progs"][p][0] / x["progs"][p][1]) / (y["progs"][p][0] / y["progs"][p][1])
                      for x, y in pairs if p in x["progs"] and p in y["progs"]]
            if ratios:
                line.append(f"{p} {statistics.median(ratios):.3f}")
        print(f"- {n}: " + ", ".join(line))


if __name__ == "__main__":
    main()
