#!/bin/sh
# /init of the ZFS test guest (busybox sh; run.sh copies it in, it is not run on the host).
# Mounts the pseudo filesystems, brings up loopback, loads the ZFS modules, creates pool `tank`
# as a mirror of two file vdevs on a tmpfs, runs /manta/cmd.sh (the program, written by run.sh)
# with its output on the second serial port, then reports the exit status there as a marker
# line and powers off. The first serial port (the kernel console) only gets kernel messages and
# this script's own log, which run.sh keeps in a file.
export PATH=/usr/sbin:/usr/bin
OUT=/dev/ttyS1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp stays the initramfs's own (memory-backed too) when the run put files there: a program
# built in a checkout under /tmp is copied to the same path, and a tmpfs would hide it.
if [ -z "$(ls -A /tmp 2>/dev/null)" ]; then
    mount -t tmpfs -o mode=1777 tmpfs /tmp
else
    chmod 1777 /tmp
fi
mount -t tmpfs -o mode=0755 tmpfs /run
# Raw: no newline translation or echo on the program's output channel.
stty -F "$OUT" raw -echo 2>/dev/null

uptime_s() { cut -d' ' -f1 /proc/uptime; }
say() { echo "@@zfs-guest: $*" >"$OUT"; echo "zfs-guest: $*" >/dev/console; }
finish() {
    echo "@@zfs-guest-exit $1@@" >"$OUT"
    sync
    poweroff -f
    sleep 5
}
fail() {
    say "error: $*"
    echo "@@zfs-guest-broken@@" >"$OUT"
    sync
    poweroff -f
    sleep 5
}

# shellcheck disable=SC1091
. /manta/config.sh # POOL, VDEV_SIZE, ARC_MAX, SHOW_POOL

hostname zfs-guest
ip link set lo up || fail "cannot bring up loopback"

t0=$(uptime_s)
while read -r m; do
    args=""
    [ "$m" = zfs ] && args="zfs_arc_max=$ARC_MAX"
    # shellcheck disable=SC2086
    insmod "/usr/lib/modules/zfs/$m.ko" $args || fail "insmod $m.ko failed (see the console log)"
done </usr/lib/modules/zfs/order
[ -c /dev/zfs ] || fail "/dev/zfs did not appear after loading the modules"

mkdir -p /vdev
mount -t tmpfs -o size=100% tmpfs /vdev
truncate -s "$VDEV_SIZE" /vdev/d0 /vdev/d1
zpool create -f "$POOL" mirror /vdev/d0 /vdev/d1 >/dev/console 2>&1 ||
    fail "zpool create $POOL failed (see the console log)"
say "kernel $(uname -r), ZFS $(cat /sys/module/zfs/version), pool $POOL (mirror of two $VDEV_SIZE file vdevs) ready at $(uptime_s) s (modules and pool took $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s)"

mkdir -p /manta/work
cd /manta/work || fail "no /manta/work"
t1=$(uptime_s)
sh /manta/cmd.sh </dev/null >"$OUT" 2>&1
rc=$?
say "program exited with status $rc after $(awk -v a="$t1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
if [ "$SHOW_POOL" = 1 ]; then
    zpool status "$POOL" >"$OUT" 2>&1
    zfs list -r -o name,used,avail,compressratio,mountpoint "$POOL" >"$OUT" 2>&1
fi
health=$(zpool list -H -o health "$POOL" 2>&1)
[ "$health" = ONLINE ] || say "warning: pool $POOL is $health after the program"
finish "$rc"
