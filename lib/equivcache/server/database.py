# SPDX-License-Identifier: MIT
#
# The cache's hash equivalence database (SQLite in the cache directory, or
# PostgreSQL through hashserv's SQLAlchemy backend): how to name it, how big
# it is, and merging a producer's database into it through a write endpoint.

import contextlib
import os
import sqlite3

from equivcache.cli import Progress, UsageError
from equivcache.server.endpoints import import_hashserv


def is_sqlite(database):
    return "://" not in database


def show_database(database):
    """The database for messages, without a password."""
    if is_sqlite(database):
        return "sqlite: " + database
    scheme, _, rest = database.partition("://")
    if "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        rest = userinfo.split(":", 1)[0] + ":***@" + host if ":" in userinfo else rest
    return scheme + "://" + rest


def database_usage(bitbake, address, workdir):
    hashserv = import_hashserv(bitbake, workdir)
    with contextlib.closing(hashserv.create_client(address)) as client:
        return {table: info["rows"] for table, info in client.get_db_usage().items()}


def sqlite_usage(path):
    if not os.path.exists(path):
        return {}
    with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as db:
        usage = {}
        for table in ("unihashes_v3", "outhashes_v2", "users"):
            try:
                usage[table] = db.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
            except sqlite3.Error:
                pass
        return usage


def read_producer_database(path):
    """(outhash rows oldest first, {(method, taskhash): unihash}) of a producer's hashserv SQLite database."""
    if not os.path.isfile(path):
        raise UsageError("no hash equivalence database at %s (the auto server's is "
                         "PERSISTENT_DIR/hashserv.db; pass --hashserv-db)" % path)
    try:
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as db:
            db.row_factory = sqlite3.Row
            outhashes = [dict(r) for r in db.execute(
                "SELECT method, taskhash, outhash, created, owner, PN, PV, PR, task, outhash_siginfo "
                "FROM outhashes_v2 ORDER BY created, id")]
            unihashes = {(r["method"], r["taskhash"]): r["unihash"]
                         for r in db.execute("SELECT method, taskhash, unihash FROM unihashes_v3 ORDER BY id")}
    except sqlite3.Error as e:
        raise UsageError("%s is not a hashserv database this layer reads (%s)" % (path, e))
    return outhashes, unihashes


NAMED_BATCH = 1000


def unihashes_named(client, unihashes):
    """Which of unihashes (a list) the database names, as [bool], asked in batches."""
    return [there for start in range(0, len(unihashes), NAMED_BATCH)
            for there in client.unihash_exists_batch(unihashes[start:start + NAMED_BATCH])]


def merge_database(client, outhashes, unihashes):
    """Report the producer's entries to the server through its write
    endpoint, the way builds report them: an entry already present is left
    alone (no duplicate), an output the server already knows keeps the
    server's unihash (the objects for it are in the cache), nothing is lost.
    Returns counts, and "superseded": the producer's unihashes the server
    answered with another one (their objects are named by no equivalence)."""
    counts = {"outhashes": len(outhashes), "unihashes": len(unihashes), "remapped": 0, "superseded": set()}
    reported = set()
    progress = Progress("merging equivalences", len(outhashes) + len(unihashes))
    for row in outhashes:
        key = (row["method"], row["taskhash"])
        unihash = unihashes.get(key, row["taskhash"])
        extra = {k: row[k] for k in ("PN", "PV", "PR", "task", "outhash_siginfo") if row.get(k) is not None}
        answer = client.report_unihash(row["taskhash"], row["method"], row["outhash"], unihash, extra)
        if key not in reported and answer["unihash"] != unihash:
            counts["remapped"] += 1
            counts["superseded"].add(unihash)
        reported.add(key)
        progress.step()
    for (method, taskhash), unihash in unihashes.items():
        if (method, taskhash) not in reported:
            answer = client.report_unihash_equiv(taskhash, method, unihash)
            if answer and answer.get("unihash") != unihash:
                counts["remapped"] += 1
                counts["superseded"].add(unihash)
        progress.step()
    progress.close()
    return counts
