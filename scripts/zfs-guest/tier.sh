#!/usr/bin/env bash
# The ZFS test tier, as ./run-tests calls it: the storage node's ZFS backend tested against real
# ZFS, inside the qemu guest (this machine's kernel cannot load ZFS).
#
#   scripts/zfs-guest/tier.sh [-- TEST-ARGS...]
#
# 1. Makes sure the guest is built (build.sh: 7 to 13 minutes the first time on a machine, then
#    cached under /var/cache/manta-zfs-guest).
# 2. Runs the harness's own check (selftest.sh) in the guest: lz4 dataset, write, snapshot,
#    `zfs get`, rollback.
# 3. Builds the storage node's ZFS test targets (storage-node/tests/zfs*.rs, feature `zfs`) on
#    the host, and runs each test binary in a fresh guest with MANTA_ZFS_POOL=tank (TEST-ARGS,
#    e.g. a test name filter, are passed to each binary).
# 4. Prints PASS/FAIL per step and `zfs-tier: N passed, M failed`.
#
# Exit status: 0 all passed; 1 something failed; 3 the tier did NOT run (the guest cannot be
# built here, or the storage node has no ZFS tests), always with a boxed "ZFS TIER NOT RUN"
# banner saying why. MANTA_ZFS_TIER=off skips the tier on purpose, with a banner, exit 0.
# MANTA_ZFS_TIER_TIMEOUT bounds each guest run (seconds, default 600).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

[ "${1:-}" = "--" ] && shift
test_args=("$@")
per_run_timeout="${MANTA_ZFS_TIER_TIMEOUT:-600}"

# A box of '#' around the message, folded at 90 columns, that no log reader can miss.
banner() {
    local lines=() l width=0 edge
    mapfile -t lines < <(printf '%s\n' "$1" | fold -s -w 90 | sed 's/ *$//')
    for l in "${lines[@]}"; do [ "${#l}" -gt "$width" ] && width="${#l}"; done
    edge="$(printf '%*s' $((width + 4)) '' | tr ' ' '#')"
    printf '\n\033[1;31m%s\n' "$edge"
    for l in "${lines[@]}"; do printf '# %-*s #\n' "$width" "$l"; done
    printf '%s\033[0m\n\n' "$edge"
}
not_run() {
    banner "ZFS TIER NOT RUN: $1"
    exit "$EXIT_NOT_BUILT"
}

if [ "${MANTA_ZFS_TIER:-on}" = off ]; then
    banner "ZFS TIER SKIPPED: MANTA_ZFS_TIER=off (storage node's ZFS backend untested in this run)"
    exit 0
fi

tier_start="$(now)"
reason_file="$(mktemp)"
trap 'rm -f "$reason_file"' EXIT
export MANTA_ZFS_GUEST_REASON_FILE="$reason_file"
say "making sure the ZFS guest is built"
set +e
guest="$("$HERE/build.sh")"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    reason="$(cat "$reason_file" 2>/dev/null)"
    not_run "${reason:-build.sh failed with status $rc}"
fi
export MANTA_ZFS_GUEST_DIR="$guest"
unset MANTA_ZFS_GUEST_REASON_FILE

passed=0
failed=0
report=()
# run_step NAME COMMAND...: runs one guest run, records PASS/FAIL with its duration.
run_step() {
    local name="$1" t rc
    shift
    t="$(now)"
    say "---- $name"
    set +e
    "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        report+=("$(printf 'PASS  %-48s %6s s' "$name" "$(elapsed "$t")")")
    else
        failed=$((failed + 1))
        local why="exit $rc"
        [ "$rc" -eq "$EXIT_GUEST_BROKEN" ] && why="guest broken"
        report+=("$(printf 'FAIL  %-48s %6s s  (%s)' "$name" "$(elapsed "$t")" "$why")")
    fi
}

run_step "harness self-test (selftest.sh)" \
    "$HERE/run.sh" --timeout "$per_run_timeout" -- "$HERE/selftest.sh"

# The storage node's ZFS tests.
mapfile -t targets < <(find "$REPO/storage-node/tests" -maxdepth 1 -name 'zfs*.rs' -printf '%f\n' 2>/dev/null |
    sed 's/\.rs$//' | sort)
if [ "${#targets[@]}" -eq 0 ] || ! grep -Eq '^zfs *=' "$REPO/storage-node/Cargo.toml"; then
    printf '%s\n' "${report[@]}"
    not_run "storage-node has no ZFS tests yet (storage-node/tests/zfs*.rs and feature 'zfs')"
fi
if ! pkg-config --exists libzfs_core 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing libzfslinux-dev (libzfs_core for the zfs-core crate)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libzfslinux-dev >&2 ||
            not_run "cannot install libzfslinux-dev, which the storage node's zfs feature links"
    else
        not_run "libzfs_core is not installed (apt-get install libzfslinux-dev, from contrib)"
    fi
fi

cargo_args=(test -p storage-node --features zfs --no-run --message-format=json --locked)
for t in "${targets[@]}"; do cargo_args+=(--test "$t"); done
say "building the storage node's ZFS tests: cargo ${cargo_args[*]}"
json="$(mktemp)"
trap 'rm -f "$reason_file" "$json"' EXIT
if ! (cd "$REPO" && cargo "${cargo_args[@]}" >"$json"); then
    failed=$((failed + 1))
    report+=("FAIL  cargo build of storage-node ZFS tests")
    printf '%s\n' "${report[@]}"
    echo "zfs-tier: $passed passed, $failed failed"
    exit 1
fi
# Test executables, and the storage-node binary in case a test starts it as a process (it is
# then found in the guest at the same path as on the host).
mapfile -t bins < <(grep '"reason":"compiler-artifact"' "$json" | grep '"kind":\["test"\]' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
extra=()
while IFS= read -r exe; do
    extra+=(--file "$exe")
done < <(grep '"reason":"compiler-artifact"' "$json" | grep '"kind":\["bin"\]' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ "${#bins[@]}" -gt 0 ] || not_run "cargo built no ZFS test executables (targets: ${targets[*]})"

for exe in "${bins[@]}"; do
    run_step "storage-node $(basename "$exe" | sed 's/-[0-9a-f]*$//') (in the guest)" \
        "$HERE/run.sh" --timeout "$per_run_timeout" "${extra[@]}" -- "$exe" "${test_args[@]}"
done

echo
echo "ZFS tier (qemu guest, $(basename "$guest")):"
printf '  %s\n' "${report[@]}"
echo "zfs tier took $(elapsed "$tier_start") s"
echo "zfs-tier: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
