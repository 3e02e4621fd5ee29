# SPDX-License-Identifier: MIT
#
# Who uses an SSTATE_DIR: the evidence that it is shared, for the rule
# shared-sstate-private-database. Each build whose SSTATE_DIR is outside its
# build directory notes itself there (its TOPDIR and the database of its
# auto hash equivalence server), once per configuration parse:
#
#   ${SSTATE_DIR}/.equivcache/builds/<key>.json  {"topdir", "database", "seen"}
#
# (a hidden directory: no sstate tool, publish or sstate index reads it).
# A record whose database is gone is dropped. An SSTATE_DIR on a network
# file system is shared with other machines' builds, recorded or not.
# Pure Python: no bb import.

import hashlib
import json
import os
import time

from equivcache import files

DIRECTORY = os.path.join(".equivcache", "builds")
# File system types that other machines mount too.
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.sshfs", "fuse.glusterfs",
                       "fuse.cephfs", "9p", "afs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2")


def key(topdir, database):
    return hashlib.sha256(("%s\0%s" % (topdir, database)).encode("utf-8")).hexdigest()[:16]


def others(sstate_dir, topdir, database):
    """[(topdir, database)] of the other builds recorded as using sstate_dir, oldest
    first; records whose database is gone are dropped."""
    directory = os.path.join(sstate_dir, DIRECTORY)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    mine = key(topdir, database) + ".json"
    found = []
    for name in names:
        if name == mine or not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
            other = (str(record["topdir"]), str(record["database"]), float(record.get("seen", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not os.path.exists(other[1]):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        found.append(other)
    return [(t, d) for t, d, _ in sorted(found, key=lambda o: o[2])]


def note(sstate_dir, topdir, database, now=None):
    """Record this build as a user of sstate_dir (quietly nothing if it cannot be written)."""
    directory = os.path.join(sstate_dir, DIRECTORY)
    try:
        os.makedirs(directory, exist_ok=True)
        files.write_json(os.path.join(directory, key(topdir, database) + ".json"),
                         {"topdir": topdir, "database": database, "seen": time.time() if now is None else now})
    except OSError:
        pass


def network_filesystem(path, mounts="/proc/mounts"):
    """The type of the network file system path is on, or "" (local, or unknown)."""
    try:
        with open(mounts) as f:
            entries = [line.split() for line in f]
    except OSError:
        return ""
    path = os.path.realpath(path)
    best, kind = "", ""
    for entry in entries:
        if len(entry) < 3:
            continue
        point = entry[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, entry[2]
    return kind if kind in NETWORK_FILESYSTEMS else ""
