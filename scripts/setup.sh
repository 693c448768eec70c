#!/usr/bin/env bash
# Installs what the region and the test suite need and are missing: Debian packages and the
# pinned Rust toolchain with its components. Sourced by ./region and ./run-tests; safe to run
# again (it only installs what is absent) and says what it does.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages, by what needs them. Only these are installed, and without their
# "Recommends": whatever the project uses must be named here or come with one of these through
# a Depends. scripts/check-packages.py (run by ./run-tests) checks that for every system file the
# build, the region and the tests use.
#   gcc, libc6-dev    crates that compile C (aws-lc-sys, ...): the compiler, and the C library
#                     headers (only a Recommends of gcc, so they must be named)
#   protobuf-compiler, libprotobuf-dev   the etcd client crate generates its gRPC code at build
#                     time: protoc, and the well-known .proto files it imports (google/protobuf)
#   pkg-config, libzfslinux-dev   the storage node's ZFS backend (cargo feature zfs; Debian contrib)
#   postgresql        metadata tier (Moray over PostgreSQL 15; initdb, pg_basebackup, pg_rewind)
#   etcd-server       coordination (shard state, shard ring, leader election)
#   etcd-client       etcdctl, for operators
#   runc              OCI runtime for job tasks
#   util-linux        setpriv: run Postgres and etcd as unprivileged users, bound to the parent; flock;
#                     nsenter: the across-hosts test's hosts enter their network namespace
#   passwd            useradd: the `manta` system user that services needing no root run as
#   iproute2          network namespaces in partition tests and the region-across-hosts test
#   systemd           systemd-analyze: the test that checks the units `manta-adm host install` writes
#   procps            kill, ps: tests and operators signal services
#   openssh-client    ssh-keygen: the region's account key, and keys in tests
#   ca-certificates, curl, openssl   TLS trust for downloads, presigned URLs and certificates in tests
#   s3cmd, rclone, python3-venv   S3 clients the tests drive (boto3 comes from PyPI into a venv)
#   time              /usr/bin/time: the CLI benchmark's CPU accounting
#   nftables          nft: the fault runs cut one service off the network
#   faketime          libfaketime: the fault runs move one service's clock
#   busybox-static    a static /bin/busybox the jobs tests pack into an OCI image of their own
MANTA_DEBIAN_PACKAGES=(
    gcc libc6-dev protobuf-compiler libprotobuf-dev pkg-config libzfslinux-dev
    postgresql etcd-server etcd-client runc util-linux passwd iproute2 systemd procps openssh-client
    ca-certificates curl openssl s3cmd rclone python3-venv time nftables faketime busybox-static
)
# Node.js and npm, for the original npm client in the compatibility tests (ensure_node installs
# them only when no `node` and `npm` are on PATH).
MANTA_NODE_PACKAGES=(nodejs npm)

missing_packages() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$p"
        fi
    done
}

ensure_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "not a Debian system: make sure these are installed yourself: $*"
        return 0
    fi
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "missing Debian packages: ${missing[*]}
run as root, or install them first:  sudo apt-get install -y ${missing[*]}"
    fi
    say "installing Debian packages: ${missing[*]}"
    if [ -z "${MANTA_APT_UPDATED:-}" ]; then
        apt-get update -q >&2 || die "apt-get update failed"
        export MANTA_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# zfs-dkms, zfsutils-linux and libzfslinux-dev live in Debian's contrib component.
ensure_contrib() {
    local f=/etc/apt/sources.list.d/debian.sources
    [ -f "$f" ] && [ "$(id -u)" -eq 0 ] || return 0
    if grep '^Components:' "$f" | grep -vq '\bcontrib\b'; then
        say "enabling the contrib component in $f (for the ZFS packages)"
        sed -i '/^Components:/{/\bcontrib\b/!s/$/ contrib/}' "$f"
        unset MANTA_APT_UPDATED
    fi
}

# Node.js runs the original manta npm client in the compatibility tests.
ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        return 0
    fi
    ensure_packages "${MANTA_NODE_PACKAGES[@]}"
}

# The original manta command line client, for the compatibility tests (target/node-manta).
ensure_node_manta() {
    local dir="$REPO_ROOT/target/node-manta"
    if [ ! -x "$dir/node_modules/manta/bin/mput" ]; then
        say "installing the original manta npm client (manta@5.4.2) into target/node-manta"
        mkdir -p "$dir"
        npm install --no-audit --no-fund --silent --prefix "$dir" manta@5.4.2 >&2 \
            || die "npm install manta@5.4.2 failed"
    fi
}

ensure_rust() {
    local want have sysroot
    command -v rustup >/dev/null 2>&1 || command -v cargo >/dev/null 2>&1 \
        || die "no Rust toolchain: install rustup (https://rustup.rs), then run this again"
    want="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$REPO_ROOT/rust-toolchain.toml")"
    if command -v rustup >/dev/null 2>&1; then
        if ! rustup run "$want" rustc --version >/dev/null 2>&1; then
            say "installing Rust $want (pinned in rust-toolchain.toml)"
            if ! rustup toolchain install "$want" --profile minimal -c clippy -c rustfmt >&2; then
                # Offline: an installed stable of exactly that version serves under the pinned name.
                have="$(rustup run stable rustc --version 2>/dev/null | awk '{print $2}')"
                [ "$have" = "$want" ] || die "cannot install Rust $want and stable is $have"
                sysroot="$(rustup run stable rustc --print sysroot)"
                say "linking the installed stable toolchain ($have) as $want"
                rustup toolchain link "$want" "$sysroot" >&2
            fi
        fi
        for c in clippy rustfmt; do
            if ! rustup component list --toolchain "$want" --installed 2>/dev/null | grep -q "^$c"; then
                # A linked toolchain lists nothing; check the tool itself.
                if ! (cd "$REPO_ROOT" && cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1); then
                    say "adding Rust component $c"
                    rustup component add "$c" --toolchain "$want" >&2 || die "cannot add $c"
                fi
            fi
        done
    fi
}

ensure_nextest() {
    if ! (cd "$REPO_ROOT" && cargo nextest --version >/dev/null 2>&1); then
        say "installing cargo-nextest (the test runner) from crates.io"
        cargo install cargo-nextest --locked >&2 || die "cannot install cargo-nextest"
    fi
}

# Fails when a system file the project uses does not come from a package installed above.
# Postgres keeps a small System V shared memory segment while it runs and removes it when it
# stops; one killed with SIGKILL (as tests kill servers and sitters) leaves it behind. The
# kernel allows 4096 (SHMMNI), after which no Postgres starts ("could not create shared memory
# segment: No space left on device"). A segment of the postgres user that no process has
# attached belongs to a Postgres that is gone: remove those (ipcs and ipcrm come with
# util-linux).
release_orphaned_postgres_shm() {
    command -v ipcs >/dev/null 2>&1 || return 0
    local ids
    mapfile -t ids < <(ipcs -m | awk '$3 == "postgres" && $6 == 0 { print $2 }')
    [ "${#ids[@]}" -eq 0 ] && return 0
    say "removing ${#ids[@]} shared memory segments left by Postgres servers that were killed"
    local id
    for id in "${ids[@]}"; do
        ipcrm -m "$id" 2>/dev/null || true
    done
}

# A fault run cuts a service off with an nftables table named manta_fault_<its pid>, removed when
# the fault ends; a run killed meanwhile leaves it, dropping packets of ports that later tests
# may be given. Remove the tables of runs that are gone.
drop_stale_fault_rules() {
    command -v nft >/dev/null 2>&1 || return 0
    local t
    for t in $(nft list tables 2>/dev/null | awk '$3 ~ /^manta_fault_[0-9]+$/ { print $3 }'); do
        if ! kill -0 "${t#manta_fault_}" 2>/dev/null; then
            say "removing the nftables table $t of a fault run that is gone"
            nft delete table inet "$t" || true
        fi
    done
}

check_packages() {
    command -v dpkg-query >/dev/null 2>&1 || return 0
    local node=()
    mapfile -t node < <(for p in "${MANTA_NODE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && echo "$p"
    done)
    python3 "$REPO_ROOT/scripts/check-packages.py" "${MANTA_DEBIAN_PACKAGES[@]}" "${node[@]}" \
        || die "a file the build or the tests use does not come from a package scripts/setup.sh installs (above)"
}
