#!/usr/bin/env python3
"""Checks that every file the build, the region and the tests use from the system comes from a
Debian package that scripts/setup.sh installs (named in MANTA_DEBIAN_PACKAGES, or pulled in by
a Depends/Pre-Depends of one, or part of every Debian system: Essential or Priority required).

A file that is on this machine only because someone installed it by hand, or because a package
came along as a "Recommends" (which setup.sh never installs), would make the two commands work
here and fail on a fresh machine. This check turns that into a failure here, naming the package
to add.

    scripts/check-packages.py PACKAGE...     (the packages setup.sh installs)

Exit status 0 when everything is accounted for, 1 otherwise (each problem on its own line).
"""

import glob
import os
import shutil
import subprocess
import sys

# What the project uses from the system, and why. A "cmd:" entry is looked up on PATH; any
# other entry is a path (a glob; at least one match must exist).
USED = [
    # The build: crates that compile C (aws-lc-sys, ...), link, and generate code.
    ("cmd:cc", "the C compiler for crates with C code"),
    ("cmd:ar", "archives of compiled C code"),
    ("/usr/include/stdio.h", "C library headers for crates with C code"),
    ("/usr/include/linux/types.h", "kernel headers for crates with C code"),
    ("cmd:protoc", "etcd-client generates its gRPC code at build time"),
    ("/usr/include/google/protobuf/descriptor.proto", "well-known .proto files protoc imports"),
    ("cmd:pkg-config", "finds libzfs_core for the storage node's ZFS backend"),
    ("/usr/include/libzfs/libzfs_core.h", "the storage node's ZFS backend (feature zfs)"),
    ("/usr/lib/*/pkgconfig/libzfs_core.pc", "the storage node's ZFS backend (feature zfs)"),
    # The region and the tests.
    ("/usr/lib/postgresql/*/bin/initdb", "Manatee peers and test databases"),
    ("/usr/lib/postgresql/*/bin/postgres", "Manatee peers and test databases"),
    ("/usr/lib/postgresql/*/bin/pg_basebackup", "Manatee standbys"),
    ("/usr/lib/postgresql/*/bin/pg_rewind", "Manatee: deposed primaries rejoin"),
    ("cmd:etcd", "coordination"),
    ("cmd:etcdctl", "operators' view of etcd"),
    ("cmd:runc", "job tasks in containers"),
    ("cmd:setpriv", "Postgres as an unprivileged user, children bound to their parent"),
    ("cmd:flock", "tests serialise shared set-up"),
    ("cmd:nsenter", "test hosts of the region-across-hosts test run in their network namespace"),
    ("cmd:ipcs", "./run-tests finds shared memory left by killed Postgres servers"),
    ("cmd:ipcrm", "./run-tests removes shared memory left by killed Postgres servers"),
    ("cmd:ip", "network namespaces in partition tests and the region-across-hosts test"),
    ("cmd:systemd-analyze", "checks the systemd units manta-adm host install writes"),
    ("cmd:kill", "tests signal services"),
    ("cmd:ssh-keygen", "the region's account key, keys in tests"),
    ("cmd:ssh-agent", "tests sign with a key held by an agent"),
    ("cmd:openssl", "certificates in TLS tests"),
    ("cmd:curl", "presigned URLs in tests"),
    ("cmd:s3cmd", "S3 client the tests drive"),
    ("cmd:rclone", "S3 client the tests drive"),
    ("/usr/lib/python3*/venv/__init__.py", "a venv for boto3 in the S3 tests"),
    ("cmd:node", "the original npm manta client in compatibility tests"),
    ("cmd:npm", "installs the original npm manta client"),
    ("cmd:update-ca-certificates", "TLS trust for npm and pip downloads"),
    ("/usr/bin/time", "the CLI benchmark's CPU accounting"),
    ("cmd:nft", "the fault runs cut one service off the network"),
    ("/usr/lib/*/faketime/libfaketime.so.1", "the fault runs move one service's clock"),
    ("cmd:mount", "the fault runs give a storage node a small disk (tmpfs)"),
    ("cmd:umount", "the fault runs give a storage node a small disk (tmpfs)"),
    ("cmd:cp", "the fault runs move a storage node's data"),
    ("cmd:df", "the jobs tests watch the node's free space while a task floods its disk"),
    ("cmd:script", "the jobs tests run mjob under a pseudo-terminal"),
    ("/usr/bin/perl", "job tasks make raw system calls in the seccomp test"),
]


def installed_packages():
    """name -> (essential_or_required, provides, depends) for every installed package."""
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f=${Package}\t${Status}\t${Essential}\t${Priority}\t${Provides}\t${Depends}, ${Pre-Depends}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pkgs = {}
    for line in out.splitlines():
        name, status, essential, priority, provides, depends = line.split("\t")
        if not status.endswith("installed") or status.endswith("not-installed"):
            continue
        base = essential == "yes" or priority == "required"
        prov = [p.split("(")[0].strip() for p in provides.split(",") if p.strip()]
        deps = []
        for d in depends.split(","):
            alts = [a.split("(")[0].strip().split(":")[0] for a in d.split("|") if a.strip()]
            if alts:
                deps.append(alts)
        pkgs[name] = (base, prov, deps)
    return pkgs


def closure(roots, pkgs):
    """Every installed package that installing `roots` brings for sure (Depends, Pre-Depends)."""
    providers = {}
    for name, (_, prov, _) in pkgs.items():
        for p in prov:
            providers.setdefault(p, []).append(name)
    seen = set()
    todo = [r for r in roots if r in pkgs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for alts in pkgs[p][2]:
            # A fresh install takes the first alternative that can be had; count the first one
            # that is installed here (or its providers, for a virtual package).
            for a in alts:
                if a in pkgs:
                    todo.append(a)
                    break
                if a in providers:
                    todo.extend(providers[a])
                    break
    return seen


def owner(path):
    """The package that ships `path` (trying the /usr-merged and resolved forms), or None."""
    candidates = [path, os.path.realpath(path)]
    for c in list(candidates):
        if c.startswith("/usr/"):
            candidates.append(c[4:])
        elif c.startswith(("/bin/", "/sbin/", "/lib/", "/lib64/")):
            candidates.append("/usr" + c)
    for c in candidates:
        r = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True)
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                # "pkg[:arch][, pkg2]: /path" (diversions say "diversion by ...")
                if line.startswith("diversion "):
                    continue
                head, _, shipped = line.rpartition(": ")
                if shipped.strip() == c:
                    return head.split(",")[0].split(":")[0].strip()
    return None


def main():
    named = sys.argv[1:]
    if not named:
        print(__doc__, file=sys.stderr)
        return 2
    if shutil.which("dpkg-query") is None:
        print("check-packages: not a Debian system; nothing checked", file=sys.stderr)
        return 0
    pkgs = installed_packages()
    missing_named = [p for p in named if p not in pkgs]
    if missing_named:
        print(f"check-packages: not installed: {' '.join(missing_named)}", file=sys.stderr)
        return 1
    base = [n for n, (b, _, _) in pkgs.items() if b]
    ok = closure(named, pkgs) | closure(base, pkgs)
    problems = []
    for item, why in USED:
        if item.startswith("cmd:"):
            found = shutil.which(item[4:])
            paths = [found] if found else []
        else:
            paths = sorted(glob.glob(item))
        if not paths:
            problems.append(f"{item} ({why}) is not on this machine")
            continue
        for path in paths:
            pkg = owner(path)
            if pkg is None:
                problems.append(
                    f"{path} ({why}) comes from no Debian package: it was installed by hand, "
                    "so a fresh machine will not have it"
                )
            elif pkg not in ok:
                problems.append(
                    f"{path} ({why}) comes from package {pkg}, which scripts/setup.sh does not "
                    f"install (not named, and no named package depends on it): add {pkg} to "
                    "MANTA_DEBIAN_PACKAGES"
                )
    for p in problems:
        print(f"check-packages: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-packages: the {len(USED)} system files the project uses all come from packages setup.sh installs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
