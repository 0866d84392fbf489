#!/usr/bin/env bash
# How many `runc run` (or `podman run --rm`) containers that exit at once
# execwatch confirms and names (docs/design.md, "The race with short-lived
# containers").
# usage (root): [RUNTIME=podman] bench/short_lived_containers.sh [BIN [N [execwatch args...]]]
# BIN defaults to target/release/execwatch, N to 20, RUNTIME to runc.
set -euo pipefail
. "$(dirname "$0")/daemon.sh"
bin=$(bench_bin "${1:-}") || exit 1
cd "$(dirname "$0")/.."
n=${2:-20}
shift $(($# > 2 ? 2 : $#))
[ "$(id -u)" = 0 ] || { echo "short_lived_containers.sh: needs root (runc, BPF)" >&2; exit 1; }
runtime=${RUNTIME:-runc}
case $runtime in runc | podman) ;; *) echo "short_lived_containers.sh: RUNTIME is runc or podman, not $runtime" >&2; exit 1 ;; esac
for tool in "$runtime" busybox python3; do
    command -v "$tool" >/dev/null || { echo "short_lived_containers.sh: $tool is missing; run scripts/install-deps --test" >&2; exit 1; }
done
# mountinfo: the file system type follows the " - " separator.
cgroot=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
[ -n "$cgroot" ] || { echo "short_lived_containers.sh: no cgroup v2 mount" >&2; exit 1; }

work=$(mktemp -d)
out="$work/events.json"
daemon=
image=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    [ -n "$image" ] && podman rmi -f "$image" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundle/rootfs/bin"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
ln -s busybox "$work/bundle/rootfs/bin/true"
(cd "$work/bundle" && runc spec)
tag="slc$$"
# The tests' podman settings (this host refuses podman's default rlimits).
export CONTAINERS_CONF="$PWD/deploy/image/containers.conf"
if [ "$runtime" = podman ]; then
    image="localhost/execwatch-bench:$tag"
    tar -C "$work/bundle/rootfs" -cf "$work/rootfs.tar" .
    podman import -q "$work/rootfs.tar" "$image" >/dev/null
fi

start_json_daemon "$bin" "$out" "$work/stderr" "$@"
for i in $(seq "$n"); do
    name="$tag-$i"
    if [ "$runtime" = podman ]; then
        podman run --rm "$image" /bin/true "$tag" >/dev/null 2>&1 || true
        sleep 0.3
        continue
    fi
    python3 - "$work/bundle/config.json" "$name" "$tag" <<'PY'
import json, sys
path, name, tag = sys.argv[1:]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true", tag]
c["root"]["readonly"] = False
c["linux"]["cgroupsPath"] = f"/system.slice/runc-{name}.scope"
json.dump(c, open(path, "w"))
PY
    (cd "$work/bundle" && runc run "$name" >/dev/null 2>&1) || true
    sleep 0.3
    rmdir "$cgroot/system.slice/runc-$name.scope" 2>/dev/null || true
done
sleep 1
kill "$daemon"
wait "$daemon" || true
daemon=
python3 - "$out" "$tag" <<'PY'
import json, sys
seen = confirmed = 0
for line in open(sys.argv[1]):
    v = json.loads(line)
    if v["event"]["action"] == "exec" and v["process"].get("args") == ["/bin/true", sys.argv[2]]:
        seen += 1
        confirmed += bool(v.get("container", {}).get("id"))
print(f"confirmed {confirmed} of {seen} containers that exit at once")
PY
