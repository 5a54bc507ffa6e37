# Sourced by bench/device_suite.sh and bench/device_checks.sh: the settings both read from the
# environment (DEVICE, DEADLINE_S, RESULTS, OUT) and the deadline that caps each part.
DEVICE=${DEVICE:-cuda}
DEADLINE_S=${DEADLINE_S:-560}
if [[ $DEVICE == cuda* ]]; then RESULTS=${RESULTS:-bench/results}; fi
RESULTS=${RESULTS:-$(mktemp -d)}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$RESULTS" "$OUT"
SUFFIX=${DEVICE%%:*}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # alol is not installed on the device

seconds_left() { echo $((DEADLINE_S - SECONDS)); }

# A part's time cap: at most $1 seconds, keeping $2 seconds of the deadline for later parts.
cap() {
    local left=$(($(seconds_left) - $2))
    echo $((left < $1 ? left : $1))
}

# A part runs only with time left for it: `has_time LIMIT || return` says so when not.
has_time() {
    if (($1 <= 0)); then
        echo "skipped: $(seconds_left) s left of the deadline"
        return 1
    fi
}

# The installed version of each named distribution, one per line.
print_versions() {
    python3 - "$@" <<'PY'
import importlib.metadata as metadata, platform, sys
print("python", platform.python_version())
for name in sys.argv[1:]:
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
PY
}
