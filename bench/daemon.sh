# Sourced by the bench scripts: find and start execwatch writing JSON lines.

# bench_bin [BIN]: BIN as an absolute path (a relative one is from where the
# script was started), or the release build; an error when it is missing.
bench_bin() {
    realpath -e "${1:-$(dirname "$0")/../target/release/execwatch}"
}

# start_json_daemon BIN OUT ERR [execwatch args...]: sets $daemon, returns
# once the daemon says it is attached, plus a second for its start-up
# (it seeds its tables after that line); exits the script if it never does.
start_json_daemon() {
    local bin=$1 out=$2 err=$3
    shift 3
    "$bin" --format json "$@" >"$out" 2>"$err" &
    daemon=$!
    for _ in $(seq 100); do
        if grep -q '"execwatch attached"' "$err"; then
            sleep 1
            return 0
        fi
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    echo "$(basename "$0"): the daemon did not start:" >&2
    cat "$err" >&2
    exit 1
}
