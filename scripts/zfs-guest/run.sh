#!/usr/bin/env bash
# Runs one host program inside the ZFS test guest and exits with its exit status.
#
#   scripts/zfs-guest/run.sh [OPTIONS] -- PROGRAM [ARGS...]
#
#   --env K=V              set K in the program's environment (repeatable). MANTA_ZFS_POOL=tank,
#                          HOME=/root, TMPDIR=/tmp and RUST_BACKTRACE=1 are set unless overridden.
#   --file HOST[:GUEST]    copy a host file into the guest, at GUEST or else the same path;
#                          a dynamically linked executable brings its libraries too (repeatable)
#   --timeout SECONDS      kill the guest after this long (default 600)
#   --vdev-size SIZE       size of each of the pool's two mirrored file vdevs (default 512M)
#   --mem MIB              guest memory (default 2048)
#   --no-strip             copy ELF files as they are (by default the copies lose their debug info)
#   --show-pool            print `zpool status` and `zfs list` after the program
#   --verbose              stream the guest's kernel console to stderr
#
# The guest (built by build.sh, which this calls; a no-op when cached) is a qemu TCG VM with 2
# vCPUs and user networking restricted to the guest itself (restrict=on; no NIC driver is loaded,
# the program talks to itself over the guest's loopback). It loads the ZFS modules, creates pool
# `tank` (a mirror of two file vdevs on a tmpfs, so each run starts from an empty pool), runs
# PROGRAM (copied in with every library ldd lists; libzfs_core, libnvpair and libzfs come from
# the guest's own ZFS userland) from /manta/work as root, and streams its stdout and stderr here.
# Progress lines go to stderr. The kernel console is kept in a temp file that is printed when
# the guest breaks. Exit status: the program's own, or 125 when the guest broke before reporting
# it (boot failure, module or pool failure, timeout, kernel panic), or 2 for a usage error.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

envs=()
files=()
timeout_s=600
vdev_size=512M
mem=2048
strip_prog=1
show_pool=0
verbose=0
while [ $# -gt 0 ]; do
    case "$1" in
        --env)
            if [ $# -lt 2 ] || ! [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
                die "--env needs NAME=VALUE" "$EXIT_USAGE"
            fi
            envs+=("$2")
            shift 2
            ;;
        --file)
            [ $# -ge 2 ] || die "--file needs HOSTPATH[:GUESTPATH]" "$EXIT_USAGE"
            files+=("$2")
            shift 2
            ;;
        --timeout)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--timeout needs whole seconds" "$EXIT_USAGE"
            timeout_s="$2"
            shift 2
            ;;
        --vdev-size)
            [[ "${2:-}" =~ ^[0-9]+[MG]$ ]] || die "--vdev-size needs a size like 384M or 1G" "$EXIT_USAGE"
            vdev_size="$2"
            shift 2
            ;;
        --mem)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--mem needs MiB" "$EXIT_USAGE"
            mem="$2"
            shift 2
            ;;
        --no-strip) strip_prog=0; shift ;;
        --show-pool) show_pool=1; shift ;;
        --verbose) verbose=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unexpected '$1': options, then --, then the program (try --help)" "$EXIT_USAGE" ;;
    esac
done
[ $# -ge 1 ] || die "no program given (usage: run.sh [OPTIONS] -- PROGRAM [ARGS...])" "$EXIT_USAGE"
prog="$1"
shift
if [[ "$prog" != */* ]]; then
    prog="$(command -v "$prog")" || die "program '$1' not found" "$EXIT_USAGE"
fi
[ -f "$prog" ] || die "program '$prog' does not exist" "$EXIT_USAGE"
command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 is not installed (build.sh installs it)" "$EXIT_GUEST_BROKEN"

guest="${MANTA_ZFS_GUEST_DIR:-}"
if [ -z "$guest" ]; then
    guest="$("$HERE/build.sh")" || exit $?
fi
[ -f "$guest/READY" ] || die "no built guest at $guest" "$EXIT_GUEST_BROKEN"

work="$(mktemp -d "${TMPDIR:-/tmp}/manta-zfs-run.XXXXXX")"
qpid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; fi
    if [ -n "${MANTA_TEST_KEEP:-}" ]; then
        say "kept $work (MANTA_TEST_KEEP)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ov="$work/overlay"
mkdir -p "$ov/manta/bin"

# Host paths land in the guest under merged /usr (/lib -> /usr/lib and so on are symlinks there,
# and an archive entry for a real /lib directory would replace the symlink).
guest_path() {
    case "$1" in
        /lib/* | /lib64/* | /bin/* | /sbin/*) printf '/usr%s\n' "$1" ;;
        *) printf '%s\n' "$1" ;;
    esac
}
declare -A in_base=()
while IFS= read -r f; do in_base[$f]=1; done <"$guest/base.files"
declare -A base_names=()
for f in "${!in_base[@]}"; do
    case "$f" in /usr/lib/x86_64-linux-gnu/* | /usr/lib64/*) base_names[${f##*/}]=1 ;; esac
done

# Copies the shared libraries an executable needs that the guest lacks; the guest's own copies
# (its ZFS userland, glibc) win over the host's.
add_libs() {
    local exe="$1" out name path dest
    out="$(ldd "$exe" 2>&1)" || return 0 # not a dynamic executable: a script or static binary
    case "$out" in *"statically linked"* | *"not a dynamic executable"*) return 0 ;; esac
    while read -r name _ path _; do
        case "$name" in
            linux-vdso.so.* | "") continue ;;
            /*) path="$name"; name="${name##*/}" ;;
        esac
        [ -n "${base_names[$name]:-}" ] && continue
        if [ "$path" = "not" ] || [ -z "$path" ]; then
            die "$exe needs $name, which neither this host nor the guest has" "$EXIT_GUEST_BROKEN"
        fi
        dest="$(guest_path "$path")"
        [ -n "${in_base[$dest]:-}" ] && continue
        [ -e "$ov$dest" ] && continue
        mkdir -p "$ov$(dirname "$dest")"
        cp -L "$path" "$ov$dest"
    done <<<"$out"
}

# Copies a file into the overlay; ELF files lose their debug info on the way (Rust test binaries
# shrink from hundreds of MiB to tens, and the guest holds them in RAM) unless --no-strip.
copy_in() {
    if [ "$strip_prog" = 1 ] && [ -f "$1" ] && [ "$(head -c 4 "$1" | tr -d '\177')" = ELF ] &&
        strip --strip-debug -o "$2" "$1" 2>/dev/null; then
        chmod --reference="$1" "$2"
    else
        cp -rL --preserve=mode,timestamps "$1" "$2"
    fi
}

t0="$(now)"
name="$(basename "$prog")"
copy_in "$prog" "$ov/manta/bin/$name"
chmod +x "$ov/manta/bin/$name"
add_libs "$prog"
for spec in "${files[@]}"; do
    src="${spec%%:*}"
    dst="${spec#*:}"
    [ "$dst" = "$spec" ] && dst="$src"
    [[ "$dst" == /* ]] || die "--file $spec: the guest path must be absolute" "$EXIT_USAGE"
    [ -e "$src" ] || die "--file $spec: $src does not exist" "$EXIT_USAGE"
    dst="$(guest_path "$dst")"
    mkdir -p "$ov$(dirname "$dst")"
    copy_in "$src" "$ov$dst"
    if [ -f "$src" ]; then add_libs "$src"; fi
done

# The host's CA bundle, for HTTP clients that insist on loading system roots even when they only
# talk plain HTTP over loopback (the guest has no network to verify anything against).
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ] && [ -z "${in_base[$ca]:-}" ]; then
    mkdir -p "$ov$(dirname "$ca")"
    cp -L "$ca" "$ov$ca"
fi

# Arguments and values travel as single-quoted shell words.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
    echo "export MANTA_ZFS_POOL=tank HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1 USER=root"
    for kv in "${envs[@]}"; do echo "export ${kv%%=*}=$(q "${kv#*=}")"; done
    printf 'exec /manta/bin/%s' "$(q "$name")"
    for a in "$@"; do printf ' %s' "$(q "$a")"; done
    echo
} >"$ov/manta/cmd.sh"
cat >"$ov/manta/config.sh" <<EOF
POOL=tank
VDEV_SIZE=$vdev_size
ARC_MAX=$((256 * 1024 * 1024))
SHOW_POOL=$show_pool
EOF
install -m 0755 "$HERE/guest-init.sh" "$ov/init"
(cd "$ov" && find . -mindepth 1 | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$work/run.cpio"
cat "$guest/base.cpio" "$work/run.cpio" >"$work/initrd"
rm -f "$work/run.cpio"
say "booting the guest ($(du -m "$work/initrd" | cut -f1) MiB initramfs, ${mem} MiB, 2 vCPUs, emulated) to run $name"

console="$work/console.log"
: >"$console"
# shellcheck disable=SC2054 # the commas are qemu's
qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$mem" -nodefaults -nographic -no-reboot
    -monitor none -kernel "$guest/vmlinuz" -initrd "$work/initrd"
    -append "console=ttyS0 loglevel=4 panic=-1 edd=off rdinit=/init"
    -netdev user,id=n0,restrict=on -device e1000,netdev=n0,romfile=
    -serial "file:$console" -serial stdio)

vpid=""
if [ "$verbose" = 1 ]; then
    tail -n +1 -f "$console" >&2 &
    vpid=$!
fi

# The program's channel: lines `@@zfs-guest: ...` are progress (to stderr), the marker line
# `@@zfs-guest-exit N@@` carries the exit status, everything else is the program's output.
status_file="$work/status"
filter() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%$'\r'}"
        case "$line" in
            *"@@zfs-guest-exit "*"@@")
                local pre="${line%%@@zfs-guest-exit *}"
                [ -n "$pre" ] && printf '%s\n' "$pre"
                local code="${line##*@@zfs-guest-exit }"
                printf '%s\n' "${code%@@}" >"$status_file"
                ;;
            *"@@zfs-guest-broken@@"*) echo broken >"$status_file" ;;
            "@@zfs-guest: "*) say "guest: ${line#@@zfs-guest: }" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
}

# qemu and the filter run in the background so that this script's INT/TERM traps fire at once
# and cleanup stops the guest (timeout passes the signal on to qemu).
mkfifo "$work/out"
filter <"$work/out" &
fpid=$!
timeout --kill-after=10 "$timeout_s" "${qemu[@]}" </dev/null >"$work/out" 2>"$work/qemu.err" &
qpid=$!
set +e
wait "$qpid"
qrc=$?
qpid=""
wait "$fpid"
set -e
[ -n "$vpid" ] && { sleep 0.2; kill "$vpid" 2>/dev/null || true; }

status="$(cat "$status_file" 2>/dev/null || true)"
if [[ "$status" =~ ^[0-9]+$ ]]; then
    say "$name exited with status $status (guest run: $(elapsed "$t0") s)"
    exit "$status"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    reason="timed out after $timeout_s s"
elif [ "$status" = broken ]; then
    reason="the guest could not set up ZFS"
elif grep -q 'Kernel panic' "$console"; then
    reason="the guest kernel panicked"
else
    reason="qemu exited ($qrc) without reporting the program's status"
fi
{
    if [ -s "$work/qemu.err" ]; then
        echo "---- qemu stderr ----"
        cat "$work/qemu.err"
    fi
    echo "---- last 40 lines of the guest console ----"
    # Without the firmware's terminal escapes.
    tail -n 40 "$console" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g'
    echo "----"
} >&2
die "guest broken: $reason" "$EXIT_GUEST_BROKEN"
