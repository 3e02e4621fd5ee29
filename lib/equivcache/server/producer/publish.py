# SPDX-License-Identifier: MIT
#
# Local publish (equivcache-server publish --from BUILDDIR CACHE): add a
# producer build's sstate objects, downloads, task signature data and hash
# equivalences to a cache this machine writes (a directory, or a bucket),
# then refresh its indexes and descriptor.

import contextlib
import sys
import time

from equivcache.formatting import human
from equivcache.server.hashequiv.database import (merge_database, merged_already, read_producer_database,
                                                  unihashes_named, usage)
from equivcache.server.producer.build import newest_build_configuration, producer_of, producer_paths
from equivcache.server.store import signatures
from equivcache.server.store.history import note_history, open_history
from equivcache.server.store.layout import server_config


# The producer a local publish's durations name (a remote one's: its token's name).
LOCAL_PRODUCER = "local"
def publish(cache, bitbake, builddir, sstate_dir=None, downloads_dir=None, hashserv_db=None,
            database=None, db_password=None, out=sys.stdout, stamps_dirs=None, buildstats_dirs=None):
    """Add a producer build's sstate objects, downloads and equivalences to a local cache."""
    paths = producer_paths(bitbake, builddir, sstate_dir, downloads_dir, stamps_dirs, hashserv_db, out,
                           buildstats_dirs)
    timed = paths.durations(LOCAL_PRODUCER)
    outhashes, unihashes = read_producer_database(paths.hashserv_db)
    config = server_config(cache.layout, database)   # refuses another database before anything is copied

    with cache.lock(out), contextlib.ExitStack() as stack:
        started = time.time()
        # A build published before brings no equivalence the cache lacks: no write endpoint. Otherwise
        # one starts while the files are copied.
        merged = merged_already(config["database"], outhashes, unihashes)
        endpoint = None if merged else stack.enter_context(
            cache.starting_endpoint(bitbake, database, db_password, config=config))[0]
        # Objects first, equivalences after: a consumer that gets a unihash
        # from the server finds its object on the mirror.
        sent = [0, 0]
        refused = []
        for area, files, source, what in paths.files():
            if area == "sstate-cache" and signatures.required(cache.layout):
                files, refused = signatures.verified_objects(cache.layout, source, files)
                say_refused(refused, source, out)
            copied, size, present = cache.add_files(area, files, source, "copying " + what, started)
            sent[0] += copied
            sent[1] += size
            out.write("%s: %d files copied (%s), %d already present, from %s\n"
                      % (what, copied, human(size), present, source))
        paths.say_absent(out)
        paths.say_durations(timed, out)
        producer = producer_of(newest_build_configuration(paths.tmpdirs))
        if merged:
            say_merged(out, {"outhashes": len(outhashes), "unihashes": len(unihashes), "remapped": 0}, 0, 0,
                       paths.hashserv_db, " (all in the cache's database already: nothing to merge)")
            summary = cache.commit(published_unihashes(outhashes, unihashes), started, producer, (), None, timed)
        else:
            hashserv, address = endpoint.result()
            with contextlib.closing(hashserv.create_client(address)) as client:
                before = usage(client)
                counts = merge_database(hashserv, address, outhashes, unihashes)
                after = usage(client)
                say_merged(out, counts, after.get("outhashes_v2", 0) - before.get("outhashes_v2", 0),
                           after.get("unihashes_v3", 0) - before.get("unihashes_v3", 0), paths.hashserv_db)
                summary = cache.commit(published_unihashes(outhashes, unihashes), started, producer,
                                       counts["superseded"], lambda batch: unihashes_named(client, batch), timed)
        out.write(commit_line(summary))
        note_history(out, lambda: open_history(cache.layout, config, db_password).note_publish(
            LOCAL_PRODUCER, summary["objects"], sent[0], sent[1]))
    return 1 if refused else 0


def say_merged(out, counts, new_out, new_uni, source, note=""):
    out.write("equivalences: %d output hashes (%d new), %d unihashes (%d new) from %s%s; %d taken over by an "
              "equivalent output the cache already had\n" % (
                  counts["outhashes"], new_out, counts["unihashes"], new_uni, source, note, counts["remapped"]))


def say_refused(refused, source, out):
    if refused:
        out.write("sstate: %d objects refused, not copied (%s%s): the cache requires signatures, and no key of its "
                  "producers (token add NAME --gpg-key FILE) verifies their .sig; sign them with SSTATE_SIG_KEY and "
                  "SSTATE_VERIFY_SIG = \"1\" in %s's build\n" % (
                      len(refused), refused[0], ", ..." if len(refused) > 1 else "", source))


def published_unihashes(outhashes, unihashes):
    """What a producer's database names: gc's ledger keeps their equivalences."""
    return set(unihashes.values()) | {r["taskhash"] for r in outhashes}


def commit_line(summary):
    """publish's last line, local or remote."""
    dropped = ("sstate: %d files dropped: their outputs were in the cache under another unihash\n"
               % summary["discarded"]) if summary.get("discarded") else ""
    timed = ("durations: %d objects' tasks and %d tasks they spare newly timed\n"
             % (summary["durations"], summary.get("covered_durations", 0))
             if summary.get("durations") or summary.get("covered_durations") else "")
    return dropped + timed + "index: %d objects, %d task signatures; sstate index: %d files (%s); descriptor: hashserv %s, " \
        "nativelsbstrings %s\n" % (summary["objects"], summary["signatures"], summary["sstate_index"],
                                   summary["sstate_index_change"], ", ".join(summary["hashserv"]),
                                   " ".join(summary["nativelsbstrings"]) or "none")
