#!/usr/bin/env bash
# Builds the qemu guest that the ZFS test tier boots, once per machine, and caches it outside the
# repository. This machine's kernel cannot load modules, so ZFS only exists inside a
# software-emulated guest: a Debian bookworm kernel, ZFS modules compiled here from Debian
# contrib's zfs-dkms source against that kernel's headers, and a busybox initramfs with the
# matching zpool/zfs userland and every shared library they need.
#
#   scripts/zfs-guest/build.sh            build if needed; print the guest directory on stdout
#   scripts/zfs-guest/build.sh --check    print the cached guest directory, or exit 3; never
#                                         installs, downloads or builds anything
#
# Cache: $MANTA_ZFS_GUEST_CACHE (default /var/cache/manta-zfs-guest)/<key>/, where the key names
# the kernel package and version, the ZFS version, busybox's version and this script's layout
# version, so a change of any of them builds a new guest; `current` points at the last one built.
# A guest directory holds vmlinuz, base.cpio (the initramfs without the program to run),
# base.files (the paths it contains), modules.order, manifest and READY (written last).
#
# Installs what it needs when missing (as root on Debian 12): the `contrib` component, the
# bookworm-backports suite (qemu-system-x86 10.0.x, matching the preinstalled qemu-utils; the
# 7.2 in bookworm main would remove qemu-utils), gcc-12, make, binutils, busybox-static and the
# host libraries the ZFS userland links. The kernel, its headers, zfs-dkms and zfsutils-linux are
# only downloaded and unpacked (installing zfsutils-linux would pull in dkms), never installed.
# A lock file serialises concurrent builds; a second caller waits and then finds the guest built.
# Exit status: 0 built or cached, 3 cannot build (the reason is printed), 2 usage.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

# Bump when the guest's layout changes in a way run.sh depends on: old caches are then rebuilt.
LAYOUT=1
ZFS_BIN_PKGS=(zfsutils-linux libzfs4linux libnvpair3linux libuutil3linux libzpool5linux)
ZFS_TOOLS=(zpool zfs zdb)

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (try --help)" "$EXIT_USAGE" ;;
esac

# ---------------------------------------------------------------------------------------------
# Versions and the cache key

# Prints the candidate version of a package, or nothing when apt does not know it.
candidate() { apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -1; }

# Sets KABI (6.1.0-N-amd64), KVER, ZVER, BBVER and KEY from apt's package lists; returns 1 when
# the lists do not name them (no contrib, or never updated).
resolve_versions() {
    local dep
    command -v apt-cache >/dev/null 2>&1 || return 1
    dep="$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | sed -n 's/^Depends: //p' | head -1)"
    KABI="$(printf '%s\n' "$dep" | sed -n 's/.*linux-image-\(6\.1\.0-[0-9]*-amd64\).*/\1/p')"
    [ -n "$KABI" ] || return 1
    KVER="$(candidate "linux-image-$KABI")"
    ZVER="$(candidate zfs-dkms)"
    local uver
    uver="$(candidate zfsutils-linux)"
    [ -n "$KVER" ] && [ -n "$ZVER" ] && [ -n "$uver" ] || return 1
    [ "$ZVER" = "$uver" ] || die "zfs-dkms ($ZVER) and zfsutils-linux ($uver) differ in version: \
the guest's modules and userland must match" "$EXIT_NOT_BUILT"
    BBVER="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)"
    [ -n "$BBVER" ] || BBVER="$(candidate busybox-static)"
    [ -n "$BBVER" ] || return 1
    KEY="$(printf 'linux-%s-%s_zfs-%s_busybox-%s_layout-%s' "$KABI" "$KVER" "$ZVER" "$BBVER" "$LAYOUT" |
        tr -c 'A-Za-z0-9._\n-' '_')"
}

# apt-cache takes about a second per question on a busy machine, so the answers are kept in
# $ZFS_GUEST_CACHE/resolved, valid while apt's lists and dpkg's status are unchanged.
versions_stamp() { stat -c '%Y' /var/lib/apt/lists /var/lib/dpkg/status 2>/dev/null | tr '\n' ' '; echo "layout-$LAYOUT"; }
resolve_versions_cached() {
    local f="$ZFS_GUEST_CACHE/resolved" stamp
    stamp="$(versions_stamp)"
    if [ -f "$f" ] && [ "$(head -1 "$f")" = "$stamp" ]; then
        { read -r _; read -r KABI; read -r KVER; read -r ZVER; read -r BBVER; read -r KEY; } <"$f"
        [ -n "$KEY" ] && return 0
    fi
    resolve_versions || return 1
    if { printf '%s\n' "$stamp" "$KABI" "$KVER" "$ZVER" "$BBVER" "$KEY" >"$f.$$"; } 2>/dev/null; then
        mv -f "$f.$$" "$f" 2>/dev/null || rm -f "$f.$$"
    fi
    return 0
}

print_current_or_fail() {
    if [ -f "$ZFS_GUEST_CACHE/current/READY" ]; then
        readlink -f "$ZFS_GUEST_CACHE/current"
        return 0
    fi
    return 1
}

if [ "$check_only" = 1 ]; then
    if resolve_versions_cached && [ -f "$ZFS_GUEST_CACHE/$KEY/READY" ]; then
        printf '%s\n' "$ZFS_GUEST_CACHE/$KEY"
        exit 0
    fi
    print_current_or_fail || die "no ZFS guest has been built on this machine (run $0)" "$EXIT_NOT_BUILT"
    exit 0
fi

# Fast path, no lock and no root needed: this exact guest is already built.
if resolve_versions_cached && [ -f "$ZFS_GUEST_CACHE/$KEY/READY" ]; then
    say "guest cached: $ZFS_GUEST_CACHE/$KEY"
    printf '%s\n' "$ZFS_GUEST_CACHE/$KEY"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# From here on we may install and build: root on Debian 12 only.

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    die "not a Debian system (no apt-get/dpkg): the ZFS guest is built from Debian 12 packages" "$EXIT_NOT_BUILT"
fi
# shellcheck disable=SC1091
codename="$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")"
[ "$codename" = bookworm ] ||
    die "this host is Debian '${codename:-unknown}', not 12 (bookworm): the guest's kernel, ZFS and \
the host libraries copied into it must all come from bookworm" "$EXIT_NOT_BUILT"
[ "$(id -u)" -eq 0 ] ||
    die "the ZFS guest is not built yet and building it needs root (apt-get, /var/cache): run \
'sudo $0' once" "$EXIT_NOT_BUILT"

mkdir -p "$ZFS_GUEST_CACHE"
exec 9>"$ZFS_GUEST_CACHE/.lock"
if ! flock -n 9; then
    say "another build of the guest is running; waiting for its lock ($ZFS_GUEST_CACHE/.lock)"
    flock 9
fi

# Offline with an older guest at hand (apt's lists name newer versions than the last build):
# use that guest, loudly, rather than fail.
fallback_or_die() {
    if [ -f "$ZFS_GUEST_CACHE/current/READY" ]; then
        warn "$1"
        warn "using the previously built guest instead: $(readlink -f "$ZFS_GUEST_CACHE/current")"
        readlink -f "$ZFS_GUEST_CACHE/current"
        exit 0
    fi
    die "$1" "$EXIT_NOT_BUILT"
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    say "apt-get update"
    apt-get update -q >&2 || fallback_or_die "apt-get update failed (no network?): cannot fetch the \
packages the ZFS guest is built from"
    APT_UPDATED=1
}

# The debian.sources stanzas for bookworm itself must carry `contrib` (zfs-dkms, zfsutils-linux
# and libzfslinux-dev live there).
ensure_contrib() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -f "$f" ]; then
        if grep -q '^Components:' "$f" && grep '^Components:' "$f" | grep -vq '\bcontrib\b'; then
            say "enabling the contrib component in $f (ZFS packages live there)"
            sed -i '/^Components:/{/\bcontrib\b/!s/$/ contrib/}' "$f"
            APT_UPDATED=0
            apt_update
        fi
    elif ! grep -rqs '^deb .* bookworm .*contrib' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        die "no $f and no bookworm 'contrib' source: add the contrib component to your bookworm \
apt source, then run this again" "$EXIT_NOT_BUILT"
    fi
}

# qemu-system-x86 must come from bookworm-backports. The mirror is the one the bookworm stanza
# already uses; backports are pinned at priority 100 by default, so adding the suite upgrades
# nothing by itself.
ensure_backports() {
    local f=/etc/apt/sources.list.d/manta-bookworm-backports.sources uri
    grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    uri="$(awk 'BEGIN { RS = "" } /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
                if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH);
                sub(/URIs:[ \t]*/, "", s); print s; exit } }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    [ -n "$uri" ] || die "cannot find the bookworm mirror in /etc/apt/sources.list.d/debian.sources \
to add bookworm-backports (needed for qemu-system-x86 10.0.x)" "$EXIT_NOT_BUILT"
    say "adding the bookworm-backports suite ($f) for qemu-system-x86 10.0.x"
    cat >"$f" <<EOF
# Added by manta's scripts/zfs-guest/build.sh: qemu-system-x86 10.0.x to match the preinstalled
# qemu-utils (bookworm's own qemu-system 7.2 would remove it). Backports are pinned at priority
# 100, so nothing else is taken from here unless asked for.
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    APT_UPDATED=0
    apt_update
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

ensure_host_packages() {
    local p missing=()
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    apt_update
    say "installing host packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        fallback_or_die "apt-get install ${missing[*]} failed"
}

ensure_qemu() {
    if command -v qemu-system-x86_64 >/dev/null 2>&1; then return 0; fi
    apt_update
    local v
    v="$(apt-cache policy qemu-system-x86 | awk '/bookworm-backports/ { print prev; exit } { prev = $1 }')"
    say "installing qemu-system-x86 from bookworm-backports (${v:-?}), beside qemu-utils"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86 >&2 ||
        die "cannot install qemu-system-x86 from bookworm-backports" "$EXIT_NOT_BUILT"
}

ensure_contrib
ensure_backports
if ! resolve_versions_cached; then
    apt_update
    resolve_versions || die "apt does not know linux-image-amd64 (6.1), zfs-dkms and zfsutils-linux \
even after apt-get update: are the bookworm main and contrib sources configured?" "$EXIT_NOT_BUILT"
fi
GUEST="$ZFS_GUEST_CACHE/$KEY"
if [ -f "$GUEST/READY" ]; then # built by whoever held the lock before us
    say "guest cached: $GUEST"
    ln -sfn "$KEY" "$ZFS_GUEST_CACHE/current"
    printf '%s\n' "$GUEST"
    exit 0
fi

# Host libraries the ZFS userland links (libblkid1, libssl3, libtirpc3, ...): they are copied
# into the guest from the host, so they must be installed here.
userland_deps() {
    local p
    for p in "${ZFS_BIN_PKGS[@]}"; do
        apt-cache show --no-all-versions "$p" | sed -n 's/^Depends: //p'
    done | tr ',' '\n' | sed 's/^ *//; s/ .*//; s/|.*//' | grep -E '^(lib|zlib)' |
        grep -vxF -f <(printf '%s\n' "${ZFS_BIN_PKGS[@]}") | sort -u
}
mapfile -t libdeps < <(userland_deps)

start="$(now)"
say "building guest $KEY"
say "  kernel linux-image-$KABI $KVER, ZFS $ZVER, busybox $BBVER"
ensure_host_packages gcc-12 make binutils busybox-static libelf1 libssl3 "${libdeps[@]}"
ensure_qemu

# Leftovers of builds that failed or were killed (we hold the lock, so none is running).
rm -rf "$ZFS_GUEST_CACHE"/.build-*
work="$ZFS_GUEST_CACHE/.build-$KEY.$$"
mkdir -p "$work/debs" "$work/tree" "$work/guest"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

say "downloading packages (not installing them)"
debs=("linux-image-$KABI=$KVER" "linux-headers-$KABI=$KVER" "linux-headers-${KABI%-amd64}-common=$KVER"
    linux-kbuild-6.1 "zfs-dkms=$ZVER")
for p in "${ZFS_BIN_PKGS[@]}"; do debs+=("$p=$ZVER"); done
(cd "$work/debs" && apt-get -q -o APT::Sandbox::User=root download "${debs[@]}" >&2) ||
    fallback_or_die "cannot download the kernel and ZFS packages for the guest (no network, or a \
package left the archive; apt-get's errors are above)"
for d in "$work"/debs/*.deb; do dpkg -x "$d" "$work/tree"; done

# Kernel headers, unpacked privately: the arch Makefile includes the common one by absolute
# path, so point it at our copy.
hdr="$work/tree/usr/src/linux-headers-$KABI"
common="$work/tree/usr/src/linux-headers-${KABI%-amd64}-common"
if [ ! -f "$hdr/Makefile" ] || [ ! -d "$common" ]; then
    die "linux-headers-$KABI did not unpack as expected" "$EXIT_NOT_BUILT"
fi
sed -i "s|^include /usr/src/|include $work/tree/usr/src/|" "$hdr/Makefile"

src="$(find "$work/tree/usr/src" -maxdepth 1 -type d -name 'zfs-*' | head -1)"
[ -x "$src/configure" ] || die "zfs-dkms did not unpack a configurable source tree" "$EXIT_NOT_BUILT"
jobs="$(nproc)"
t="$(now)"
say "configuring ZFS $ZVER for kernel $KABI (2 to 5 minutes on 2 cores; log: $work/configure.log)"
if ! (cd "$src" && ./configure --with-config=kernel --with-linux="$common" --with-linux-obj="$hdr") \
    >"$work/configure.log" 2>&1; then
    tail -n 30 "$work/configure.log" >&2
    trap - EXIT
    die "configuring the ZFS modules failed (log kept: $work/configure.log)" "$EXIT_NOT_BUILT"
fi
say "configured in $(elapsed "$t") s; compiling the modules with make -j$jobs (4 to 7 minutes)"
t="$(now)"
if ! make -C "$src/module" -j"$jobs" >"$work/make.log" 2>&1; then
    tail -n 30 "$work/make.log" >&2
    trap - EXIT
    die "compiling the ZFS modules failed (log kept: $work/make.log)" "$EXIT_NOT_BUILT"
fi
say "compiled in $(elapsed "$t") s"

g="$work/guest"
root="$work/rootfs"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,usr/lib/modules/zfs,etc,root,tmp,proc,sys,dev,run,manta,vdev}
for l in bin sbin lib lib64; do ln -s "usr/$l" "$root/$l"; done

# Modules, stripped of debug info (zfs.ko: 64 MB to 6 MB), and an insmod order that loads each
# module after the ones it depends on.
mapfile -t kos < <(find "$src/module" -name '*.ko')
[ "${#kos[@]}" -ge 2 ] || die "the build produced no kernel modules" "$EXIT_NOT_BUILT"
for ko in "${kos[@]}"; do strip --strip-debug -o "$root/usr/lib/modules/zfs/$(basename "$ko")" "$ko"; done
order=()
declare -A placed=()
for pass in "${kos[@]}"; do
    : "$pass" # one pass per module at most
    for ko in "$root"/usr/lib/modules/zfs/*.ko; do
        m="$(basename "$ko" .ko)"
        [ -n "${placed[$m]:-}" ] && continue
        ready=1
        deps="$(objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout | tr '\0' '\n' |
            sed -n 's/^depends=//p' | tr ',' ' ')"
        for dep in $deps; do
            [ -n "${placed[$dep]:-}" ] || ready=0
        done
        [ "$ready" = 1 ] && { order+=("$m"); placed[$m]=1; }
    done
done
[ "${#order[@]}" -eq "${#kos[@]}" ] || die "cannot order the ZFS modules by their dependencies" "$EXIT_NOT_BUILT"
vermagic="$(objcopy -O binary --only-section=.modinfo "$root/usr/lib/modules/zfs/zfs.ko" /dev/stdout |
    tr '\0' '\n' | sed -n 's/^vermagic=//p')"
[ "${vermagic%% *}" = "$KABI" ] || die "zfs.ko was built for '${vermagic%% *}', not $KABI" "$EXIT_NOT_BUILT"
printf '%s\n' "${order[@]}" >"$root/usr/lib/modules/zfs/order"
cp "$root/usr/lib/modules/zfs/order" "$g/modules.order"

# Kernel.
cp "$work/tree/boot/vmlinuz-$KABI" "$g/vmlinuz"
cp "$work/tree/boot/config-$KABI" "$g/config"

# Userland: busybox (as /usr/bin/sh and every applet), the ZFS tools and libraries from the
# debs, and each shared library they need, copied from the host at the same path.
cp /bin/busybox "$root/usr/bin/busybox"
for a in $(busybox --list); do
    [ -e "$root/usr/bin/$a" ] || ln -s busybox "$root/usr/bin/$a"
done
for tool in "${ZFS_TOOLS[@]}"; do cp "$work/tree/sbin/$tool" "$root/usr/sbin/$tool"; done
cp -a "$work"/tree/lib/x86_64-linux-gnu/lib*.so* "$root/usr/lib/x86_64-linux-gnu/"
for tool in "${ZFS_TOOLS[@]}"; do
    LD_LIBRARY_PATH="$work/tree/lib/x86_64-linux-gnu" ldd "$root/usr/sbin/$tool"
done | awk '/=> not found/ { print "MISSING " $1; next } /=>/ { print $3; next } /^\t\// { print $1 }' |
    sort -u >"$work/libs"
if grep -q '^MISSING' "$work/libs"; then
    die "the ZFS userland needs libraries this host lacks: $(sed -n 's/^MISSING //p' "$work/libs" | tr '\n' ' ')" "$EXIT_NOT_BUILT"
fi
while read -r lib; do
    case "$lib" in "$work"/*) continue ;; esac # the ZFS libraries, already copied
    # /lib/... is /usr/lib/... on bookworm (merged /usr); keep the guest's /lib a symlink.
    dest="/usr${lib#/usr}"
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$lib" "$root$dest"
done <"$work/libs"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
printf '127.0.0.1\tlocalhost zfs-guest\n::1\tlocalhost ip6-localhost\n' >"$root/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
ln -s /proc/self/mounts "$root/etc/mtab"

# base.cpio stays uncompressed: qemu loads it in a blink and the emulated CPU does not spend
# seconds inflating it; run.sh appends a second archive (init, program, files) to it.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$g/base.cpio"
(cd "$root" && find . -mindepth 1 | sed 's/^\.//' | LC_ALL=C sort) >"$g/base.files"

{
    echo "key=$KEY"
    echo "kernel=linux-image-$KABI $KVER"
    echo "zfs=$ZVER"
    echo "busybox=$BBVER"
    echo "modules=${order[*]}"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) in $(elapsed "$start") s on $(nproc) cores"
    echo "base.cpio=$(stat -c %s "$g/base.cpio") bytes"
} >"$g/manifest"
date -u +%Y-%m-%dT%H:%M:%SZ >"$g/READY"

rm -rf "$GUEST"
mv "$g" "$GUEST"
ln -sfn "$KEY" "$ZFS_GUEST_CACHE/current.tmp.$$"
mv -T "$ZFS_GUEST_CACHE/current.tmp.$$" "$ZFS_GUEST_CACHE/current"
say "guest built in $(elapsed "$start") s: $GUEST"
sed 's/^/    /' "$GUEST/manifest" >&2
printf '%s\n' "$GUEST"
