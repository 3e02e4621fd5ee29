# SPDX-License-Identifier: MIT
#
# equivcache-server publish: add a producer build's sstate objects,
# downloads, task signature data and hash equivalences to a cache, then
# refresh its index and descriptor. Also what it reads of the producer's
# build directory: its downloads and the build configuration banner.

import contextlib
import os
import re
import shutil
import sys
import time

from equivcache import descriptor as desc
from equivcache import names, sstateindex
from equivcache.files import write_json
from equivcache.index import build as build_index
from equivcache.cli import Progress, UsageError
from equivcache.formatting import human
from equivcache.server.database import merge_database, read_producer_database
from equivcache.server.endpoints import import_hashserv, write_endpoint
from equivcache.server.gc import note_published
from equivcache.server.layout import server_config, taking_turns, write_descriptor


# Fetcher state in DL_DIR that a mirror must not copy: locks, done stamps,
# and the VCS clones (a mirror serves their tarballs, BB_GENERATE_MIRROR_TARBALLS).
_DOWNLOAD_SKIP_DIRS = ("git2", "gitsm", "svn", "hg", "bzr", "cvs", "repo", "npm2", "crate", "gomod")
_DOWNLOAD_SKIP_SUFFIXES = (".lock", ".done", ".tmp")


def download_files(dl_dir):
    """The files of DL_DIR a mirror serves: (relative path, size)."""
    for top, dirs, files in os.walk(dl_dir):
        if top == dl_dir:
            dirs[:] = [d for d in dirs if d not in _DOWNLOAD_SKIP_DIRS]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_DOWNLOAD_SKIP_SUFFIXES) or name.startswith("."):
                continue
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            yield os.path.relpath(path, dl_dir), os.path.getsize(path)


_CONFIG_LINE = re.compile(r'^(\S+)\s*=\s*"(.*)"\s*$')
_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def parse_build_configuration(text):
    """The "Build Configuration:" block bitbake prints at the start of a build
    (and keeps in tmp/log/cooker/MACHINE/*.log): ({VARIABLE: value},
    [{"name": layer, "revision": "branch:revision"}]). The variables come
    first (upper-case names, BUILDCFG_VARS: which ones differs between
    releases), then the layers; several layers on one revision are listed
    one per line, the value on the last. ({}, []) if absent."""
    values, layers, pending = {}, [], []
    lines = text.splitlines()
    try:
        start = lines.index("Build Configuration:")
    except ValueError:
        return values, layers
    for line in lines[start + 1:]:
        line = line.rstrip()
        if not line.strip():
            break
        m = _CONFIG_LINE.match(line)
        if m and not layers and not pending and _VARIABLE.match(m.group(1)):
            values[m.group(1)] = m.group(2)
        elif m:
            for name in pending + [m.group(1)]:
                layers.append({"name": name, "revision": m.group(2)})
            pending = []
        elif re.match(r"^\S+$", line.strip()):
            pending.append(line.strip())
        else:
            break
    return values, layers


def newest_build_configuration(builddir):
    """parse_build_configuration() of the newest cooker log of a build
    directory (any TMPDIR under it named tmp*), with the log's path; None if none."""
    logs = []
    try:
        tmpdirs = [os.path.join(builddir, d) for d in os.listdir(builddir) if d.startswith("tmp")]
    except FileNotFoundError:
        return None
    for tmpdir in tmpdirs:
        cooker = os.path.join(tmpdir, "log", "cooker")
        for top, _, files in os.walk(cooker):
            logs.extend(os.path.join(top, f) for f in files if f.endswith(".log"))
    for path in sorted(logs, key=lambda p: os.path.getmtime(p), reverse=True):
        with open(path, errors="replace") as f:
            values, layers = parse_build_configuration(f.read(65536))
        if values:
            return values, layers, path
    return None


def copy_tree(files, source, target, what):
    """Copy (relative path, size) files that target lacks (or has with
    another size): to a temporary name, then renamed, so that the mirror
    never serves a partial file. Every file published, copied or already
    there, gets the time of now as mtime and atime: gc's "published" and
    "used". Returns (copied, bytes, present)."""
    copied = size = present = 0
    progress = Progress(what, len(files))
    now = time.time()
    for rel, length in files:
        dest = os.path.join(target, rel)
        try:
            if os.path.getsize(dest) == length:
                os.utime(dest, (now, now))
                present += 1
                progress.step()
                continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = os.path.join(os.path.dirname(dest), ".tmp-%d-%s" % (os.getpid(), os.path.basename(dest)[-40:]))
        try:
            shutil.copy2(os.path.join(source, rel), tmp)
            os.chmod(tmp, 0o644)
            os.utime(tmp, (now, now))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        copied += 1
        size += length
        progress.step()
    progress.close()
    return copied, size, present


def producer_stamps(builddir):
    """The STAMPS_DIRs of a build directory: TMPDIR/stamps of each tmp* under it."""
    try:
        names = sorted(os.listdir(builddir))
    except FileNotFoundError:
        return []
    return [os.path.join(builddir, n, "stamps") for n in names
            if n.startswith("tmp") and os.path.isdir(os.path.join(builddir, n, "stamps"))]


def publish(layout, bitbake, builddir, sstate_dir=None, downloads_dir=None, hashserv_db=None,
            database=None, db_password=None, out=sys.stdout, stamps_dirs=None):
    """Add a producer build's sstate objects, downloads and equivalences to the cache."""
    if not os.path.isdir(builddir):
        raise UsageError("--from %s: no such build directory" % builddir)
    sstate_dir = os.path.abspath(sstate_dir or os.path.join(builddir, "sstate-cache"))
    if not os.path.isdir(sstate_dir):
        raise UsageError("no sstate cache at %s (pass --sstate-dir with the producer's SSTATE_DIR)" % sstate_dir)
    downloads_dir = os.path.abspath(downloads_dir or os.path.join(builddir, "downloads"))
    hashserv_db = os.path.abspath(hashserv_db or os.path.join(builddir, "cache", "hashserv.db"))
    outhashes, unihashes = read_producer_database(hashserv_db)
    config = server_config(layout, database)
    hashserv = import_hashserv(bitbake, layout.private)

    with taking_turns(layout, out):
        started = time.time()
        # Objects first, equivalences after: a consumer that gets a unihash
        # from the server finds its object on the mirror.
        files = [(rel, size) for rel, size, _ in names.sstate_files(sstate_dir)]
        copied, size, present = copy_tree(files, sstate_dir, layout.sstate, "copying sstate")
        out.write("sstate: %d files copied (%s), %d already present, from %s\n"
                  % (copied, human(size), present, sstate_dir))
        if os.path.isdir(downloads_dir):
            files = list(download_files(downloads_dir))
            copied, size, present = copy_tree(files, downloads_dir, layout.downloads, "copying downloads")
            out.write("downloads: %d files copied (%s), %d already present, from %s\n"
                      % (copied, human(size), present, downloads_dir))
        else:
            out.write("downloads: none at %s (pass --downloads-dir with the producer's DL_DIR)\n" % downloads_dir)
        stamps_dirs = [os.path.abspath(p) for p in stamps_dirs] if stamps_dirs else producer_stamps(builddir)
        for stamps in stamps_dirs:
            if not os.path.isdir(stamps):
                raise UsageError("--stamps-dir %s: no such directory" % stamps)
            files = [(rel, size) for rel, size, _ in names.sigdata_files(stamps)]
            copied, size, present = copy_tree(files, stamps, layout.siginfo, "copying signatures")
            out.write("signatures: %d files copied (%s), %d already present, from %s\n"
                      % (copied, human(size), present, stamps))
        if not stamps_dirs:
            out.write("signatures: no STAMPS_DIR under %s (pass --stamps-dir with the producer's STAMPS_DIR)\n"
                      % builddir)

        with write_endpoint(layout, bitbake, hashserv, config["database"], db_password) as address:
            with contextlib.closing(hashserv.create_client(address)) as client:
                before = {t: i["rows"] for t, i in client.get_db_usage().items()}
                counts = merge_database(client, outhashes, unihashes)
                after = {t: i["rows"] for t, i in client.get_db_usage().items()}
        note_published(layout, set(unihashes.values()) | {r["taskhash"] for r in outhashes}, started)
        new_out = after.get("outhashes_v2", 0) - before.get("outhashes_v2", 0)
        new_uni = after.get("unihashes_v3", 0) - before.get("unihashes_v3", 0)
        out.write("equivalences: %d output hashes (%d new), %d unihashes (%d new) from %s; %d taken "
                  "over by an equivalent output the cache already had\n" % (
                      counts["outhashes"], new_out, counts["unihashes"], new_uni, hashserv_db, counts["remapped"]))

        index = build_index(layout.sstate, siginfo_dir=layout.siginfo)
        write_json(layout.index, index)
        entries, added, rewritten = sstateindex.update(layout.sstate, layout.sstate_index)
        found = newest_build_configuration(builddir)
        producer = None
        if found:
            values, layers, _ = found
            producer = {k: values[k] for k in desc.PRODUCER_KEYS if k in values}
            producer["layers"] = layers
        doc = write_descriptor(layout, producer=producer)
        objects = sum(1 for o in index["objects"] if o["path"])
        out.write("index: %d objects, %d task signatures; sstate index: %d files (%s); "
                  "descriptor: hashserv %s, nativelsbstrings %s\n" % (
                      objects, len(index["signatures"]), entries,
                      "new generation" if rewritten else "%d appended" % added, ", ".join(doc["hashserv"]),
                      " ".join(doc["nativelsbstrings"]) or "none"))
    return 0
