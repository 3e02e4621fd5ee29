# SPDX-License-Identifier: MIT
#
# equivcache-server publish: add a producer build's sstate objects,
# downloads, task signature data and hash equivalences to a cache, then
# refresh its index and descriptor. Also what it reads of the producer's
# build directory: its downloads and the build configuration banner.

import contextlib
import os
import re
import sys
import time

from equivcache.formatting import human
from equivcache.server.producer import producer_paths
from equivcache.server.cache import commit_line, producer_of
from equivcache.server.database import merge_database, read_producer_database, unihashes_named
from equivcache.server.endpoints import import_hashserv, write_endpoint
from equivcache.server.gc import note_history
from equivcache.server.history import open_history
from equivcache.server.layout import server_config


# The producer a local publish's durations name (a remote one's: its token's name).
LOCAL_PRODUCER = "local"
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


def newest_build_configuration(tmpdirs):
    """parse_build_configuration() of the newest cooker log of the TMPDIRs
    of a build, with the log's path; None if none."""
    logs = []
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


def publish(cache, bitbake, builddir, sstate_dir=None, downloads_dir=None, hashserv_db=None,
            database=None, db_password=None, out=sys.stdout, stamps_dirs=None, buildstats_dirs=None):
    """Add a producer build's sstate objects, downloads and equivalences to a local cache."""
    paths = producer_paths(bitbake, builddir, sstate_dir, downloads_dir, stamps_dirs, hashserv_db, out,
                           buildstats_dirs)
    timed = paths.durations(LOCAL_PRODUCER)
    outhashes, unihashes = read_producer_database(paths.hashserv_db)
    layout = cache.layout
    config = server_config(layout, database)
    hashserv = import_hashserv(bitbake, layout.private)

    with cache.lock(out):
        started = time.time()
        # Objects first, equivalences after: a consumer that gets a unihash
        # from the server finds its object on the mirror.
        sent = [0, 0]
        for area, files, source, what in paths.files():
            copied, size, present = cache.add_files(area, files, source, "copying " + what, started)
            sent[0] += copied
            sent[1] += size
            out.write("%s: %d files copied (%s), %d already present, from %s\n"
                      % (what, copied, human(size), present, source))
        paths.say_absent(out)
        paths.say_durations(timed, out)

        with write_endpoint(layout, bitbake, hashserv, config["database"], db_password) as address:
            with contextlib.closing(hashserv.create_client(address)) as client:
                before = {t: i["rows"] for t, i in client.get_db_usage().items()}
                counts = merge_database(client, outhashes, unihashes)
                after = {t: i["rows"] for t, i in client.get_db_usage().items()}
                new_out = after.get("outhashes_v2", 0) - before.get("outhashes_v2", 0)
                new_uni = after.get("unihashes_v3", 0) - before.get("unihashes_v3", 0)
                out.write("equivalences: %d output hashes (%d new), %d unihashes (%d new) from %s; %d taken "
                          "over by an equivalent output the cache already had\n" % (
                              counts["outhashes"], new_out, counts["unihashes"], new_uni, paths.hashserv_db,
                              counts["remapped"]))
                summary = cache.commit(published_unihashes(outhashes, unihashes), started,
                                       producer_of(newest_build_configuration(paths.tmpdirs)),
                                       counts["superseded"], lambda batch: unihashes_named(client, batch),
                                       timed)
        out.write(commit_line(summary))
        note_history(out, lambda: open_history(layout, config, db_password).note_publish(
            LOCAL_PRODUCER, summary["objects"], sent[0], sent[1]))
    return 0


def published_unihashes(outhashes, unihashes):
    """What a producer's database names: gc's ledger keeps their equivalences."""
    return set(unihashes.values()) | {r["taskhash"] for r in outhashes}
