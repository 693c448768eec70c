#!/bin/sh
# The harness's own check, run inside the guest by tier.sh (`run.sh -- selftest.sh`) before the
# storage node's ZFS tests: proves the guest has a working pool that honours the properties the
# storage node relies on. Creates a dataset with compression=lz4 and checksum=sha256, writes
# compressible data, snapshots it, checks `zfs get`, then damages the file and rolls back to the
# snapshot and checks the bytes are back. Prints what it checks; exits 1 on the first mismatch.
set -eu
pool="${MANTA_ZFS_POOL:?MANTA_ZFS_POOL is not set}"
ds="$pool/selftest"

check() { # check WHAT GOT WANT
    if [ "$2" = "$3" ]; then
        echo "ok   $1 = $2"
    else
        echo "FAIL $1: got '$2', want '$3'"
        exit 1
    fi
}

zfs create -o compression=lz4 -o checksum=sha256 "$ds"
mnt="$(zfs get -H -o value mountpoint "$ds")"
check "mounted at" "$(grep -c " $mnt zfs " /proc/mounts)" 1
check "compression" "$(zfs get -H -o value compression "$ds")" lz4
check "checksum" "$(zfs get -H -o value checksum "$ds")" sha256

# 16 MiB of a repeated line: lz4 must shrink it by far.
yes 'manta zfs guest self-test line' | head -c 16777216 >"$mnt/data"
want="$(sha256sum "$mnt/data" | cut -d' ' -f1)"
sync
zfs snapshot "$ds@one"
check "snapshot listed" "$(zfs list -H -t snapshot -o name "$ds@one")" "$ds@one"
ratio="$(zfs get -H -p -o value compressratio "$ds")"
check "compressratio above 4x" "$(awk -v r="${ratio%x}" 'BEGIN { print (r > 4) ? "yes" : "no (" r ")" }')" yes
used="$(zfs get -H -p -o value used "$ds")"
check "space used below 4 MiB" "$([ "$used" -lt 4194304 ] && echo yes || echo "no ($used)")" yes

# Damage the live file, roll back, and the snapshot's bytes must be back.
echo overwritten >"$mnt/data"
zfs rollback "$ds@one"
check "sha256 after rollback" "$(sha256sum "$mnt/data" | cut -d' ' -f1)" "$want"

zfs destroy -r "$ds"
check "dataset destroyed" "$(zfs list -H -o name "$ds" 2>/dev/null || echo gone)" gone
echo "selftest: all checks passed"
