# shellcheck shell=bash disable=SC2034
# Shared by build.sh, run.sh and tier.sh (sourced, never run): messages, the cache location and
# the exit statuses the three scripts promise.

# Where built guests live: one directory per version key, plus `current` pointing at the last
# one built. Outside the repository so every checkout and CI clone on the machine shares it.
ZFS_GUEST_CACHE="${MANTA_ZFS_GUEST_CACHE:-/var/cache/manta-zfs-guest}"

# Exit statuses.
#   run.sh passes the program's own status through; these are its own failures, chosen high so
#   that tests (which exit 0, 1 or 101) never collide with them.
EXIT_GUEST_BROKEN=125 # the guest did not get as far as reporting the program's exit status
EXIT_NOT_BUILT=3      # build.sh could not build a guest; tier.sh: the tier did not run
EXIT_USAGE=2

_zg_name="$(basename "$0" .sh)"
say() { printf '\033[1m[zfs-guest %s]\033[0m %s\n' "$_zg_name" "$*" >&2; }
warn() { printf '\033[1;33m[zfs-guest %s] warning:\033[0m %s\n' "$_zg_name" "$*" >&2; }

# die REASON [STATUS]: the reason also goes to $MANTA_ZFS_GUEST_REASON_FILE when set, so that
# tier.sh can repeat it in its banner.
die() {
    printf '\033[1;31m[zfs-guest %s] error:\033[0m %s\n' "$_zg_name" "$1" >&2
    if [ -n "${MANTA_ZFS_GUEST_REASON_FILE:-}" ]; then
        printf '%s\n' "$1" >"$MANTA_ZFS_GUEST_REASON_FILE" || true
    fi
    exit "${2:-1}"
}

# Seconds since the epoch with a fractional part, for timings in messages.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
