# SPDX-License-Identifier: MIT
#
# The cache's hash equivalence database (SQLite in the cache directory, or
# PostgreSQL through hashserv's SQLAlchemy backend): how to name it, how big
# it is, merging a producer's database into it through a write endpoint,
# gc's mark and sweep of its equivalences, and (in_postgresql) statements on
# the tables the cache keeps beside hashserv's in PostgreSQL.

import contextlib
import os
import secrets
import sqlite3

from equivcache.cli import Progress, UsageError
from equivcache.server.hashequiv.processes import import_hashserv
from equivcache.uploadapi import EQUIVALENCE_EXTRA


def is_sqlite(database):
    return "://" not in database


def postgresql_dsn(database):
    """asyncpg's DSN of a database URL as hashserv takes it (postgresql+asyncpg://...)."""
    return database.replace("+asyncpg", "", 1)


def in_postgresql(dsn, password, statements, query=None):
    """Run (sql, args) statements ($1 placeholders; args a list of tuples:
    executemany) in one transaction on a connection of their own, then
    query (sql, args); its rows (asyncpg Records). The cache's state and its
    history (store/) keep their tables beside hashserv's this way. OSError
    where the database cannot be reached."""
    async def run():
        import asyncpg
        connection = await asyncpg.connect(dsn, password=password)
        try:
            async with connection.transaction():
                for sql, args in statements:
                    if args and isinstance(args[0], tuple):
                        await connection.executemany(sql, args)
                    else:
                        await connection.execute(sql, *args)
                return await connection.fetch(query[0], *query[1]) if query else []
        finally:
            await connection.close()
    import asyncio   # here: 14 ms every command would pay at start
    return asyncio.run(run())


def show_database(database):
    """The database for messages, without a password."""
    if is_sqlite(database):
        return "sqlite: " + database
    scheme, _, rest = database.partition("://")
    if "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        rest = userinfo.split(":", 1)[0] + ":***@" + host if ":" in userinfo else rest
    return scheme + "://" + rest


def database_usage(bitbake, address):
    """{table: rows} of the database behind a hashserv address."""
    with contextlib.closing(import_hashserv(bitbake).create_client(address)) as client:
        return usage(client)


def usage(client):
    """{table: rows} as a hashserv client's get_db_usage() answers."""
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


def merged_already(database, outhashes, unihashes):
    """Whether the cache's database holds a producer's equivalences as they
    are (each output hash row, each task's unihash the producer's): merging
    them would add nothing and find nothing superseded, so a publish of a
    build published before needs no write endpoint. Asked of a SQLite
    database directly, read-only, a row at a time by its unique index;
    False for PostgreSQL (not asked) or a database that cannot be read."""
    if not is_sqlite(database) or not os.path.isfile(database):
        return False
    expected = dict(unihashes)
    for row in outhashes:
        expected.setdefault((row["method"], row["taskhash"]), row["taskhash"])
    try:
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % database, uri=True)) as db:
            for row in outhashes:
                if db.execute("SELECT 1 FROM outhashes_v2 WHERE method=? AND taskhash=? AND outhash=?",
                              (row["method"], row["taskhash"], row["outhash"])).fetchone() is None:
                    return False
            for (method, taskhash), unihash in expected.items():
                found = db.execute("SELECT unihash FROM unihashes_v3 WHERE method=? AND taskhash=?",
                                   (method, taskhash)).fetchone()
                if found is None or found[0] != unihash:
                    return False
    except sqlite3.Error:
        return False
    return True


NAMED_BATCH = 1000


def unihashes_named(client, unihashes):
    """Which of unihashes (a list) the database names, as [bool], asked in batches."""
    return [there for start in range(0, len(unihashes), NAMED_BATCH)
            for there in client.unihash_exists_batch(unihashes[start:start + NAMED_BATCH])]


# A merge's connections at once: each report is a round trip (and a build
# host reporting to a remote cache waits out the network's on each).
MERGE_CONNECTIONS = 4


class NoLogin(Exception):
    """The write endpoint took no connection (or refused the user's login)."""


def merge_database(hashserv, address, outhashes, unihashes, username=None, password=None,
                   connections=MERGE_CONNECTIONS, progress=True):
    """Report the producer's entries to the server at address (a write
    endpoint, as username if given), the way builds report them: an entry
    already present is left alone (no duplicate), an output the server
    already knows keeps the server's unihash (the objects for it are in the
    cache), nothing is lost. Over `connections` at once, the rows that
    share a task or an output on one of them in their order: the answers are
    those of one connection. Returns counts, and "superseded": the
    producer's unihashes the server answered with another one (their
    objects are named by no equivalence). NoLogin if no connection is made.
    progress: a progress bar on a terminal (not for serve's merges)."""
    import asyncio   # here: 14 ms every command would pay at start
    return asyncio.run(_merge(hashserv, address, outhashes, unihashes, username, password, connections, progress))


def _lanes(outhashes, count):
    """outhashes in count lists, those sharing a (method, taskhash) or a
    (method, outhash) in one, in their order."""
    parent = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key
    for row in outhashes:
        parent[root(("o", row["method"], row["outhash"]))] = root(("t", row["method"], row["taskhash"]))
    lanes, lane_of = [[] for _ in range(count)], {}
    for row in outhashes:
        group = root(("t", row["method"], row["taskhash"]))
        lanes[lane_of.setdefault(group, len(lane_of) % count)].append(row)
    return lanes


async def _merge(hashserv, address, outhashes, unihashes, username, password, connections, shown):
    import asyncio
    counts = {"outhashes": len(outhashes), "unihashes": len(unihashes), "remapped": 0, "superseded": set()}
    progress = Progress("merging equivalences", len(outhashes) + len(unihashes) if shown else 0)
    reported = set()

    def answered(unihash, answer):
        if answer and answer.get("unihash") != unihash:
            counts["remapped"] += 1
            counts["superseded"].add(unihash)

    async def report(client, rows):
        for row in rows:
            key = (row["method"], row["taskhash"])
            unihash = unihashes.get(key, row["taskhash"])
            extra = {k: row[k] for k in EQUIVALENCE_EXTRA if row.get(k) is not None}
            answer = await client.report_unihash(row["taskhash"], row["method"], row["outhash"], unihash, extra)
            if key not in reported:   # a task's rows share a lane: its first answer counts
                answered(unihash, answer)
            reported.add(key)
            progress.step()

    async def report_equiv(client, pending):
        for (method, taskhash), unihash in pending:
            answered(unihash, await client.report_unihash_equiv(taskhash, method, unihash))
            progress.step()

    clients = []
    try:
        try:
            for _ in range(connections if len(outhashes) + len(unihashes) > 1 else 1):
                clients.append(await hashserv.create_async_client(address, username, password))
        except Exception as e:   # hashserv's client raises what its transport raises
            raise NoLogin(str(e) or type(e).__name__) from e
        await asyncio.gather(*(report(c, rows) for c, rows in zip(clients, _lanes(outhashes, len(clients)))))
        rest = [item for item in unihashes.items() if item[0] not in reported]
        progress.step(len(unihashes) - len(rest))
        await asyncio.gather(*(report_equiv(c, rest[n::len(clients)]) for n, c in enumerate(clients)))
    finally:
        for client in clients:
            await client.close()
    progress.close()
    return counts


MARK_BATCH = 1000
MARK_CONNECTIONS = 8


def mark_and_sweep(hashserv, address, unihashes, checkpoint=lambda phase, step: None):
    """hashserv's gc under a mark of its own: mark the rows of `unihashes`
    (rows reported meanwhile are kept too), then sweep the others in one
    transaction. Returns (marked rows, swept rows). checkpoint(phase, step)
    is called before each step ("mark", "sweep"): gc's kill test hook."""
    import asyncio   # here: 14 ms every command would pay at start
    return asyncio.run(_mark_and_sweep(hashserv, address, sorted(unihashes), checkpoint))


async def _mark_and_sweep(hashserv, address, unihashes, checkpoint):
    import asyncio
    mark = "equivcache-gc-" + secrets.token_hex(8)
    clients = [await hashserv.create_async_client(address)]
    try:
        await clients[0].gc_mark(mark, {})   # starts the mark
        checkpoint("mark", 1)
        marked = 0
        progress = Progress("marking equivalences", len(unihashes))
        stream = hasattr(clients[0], "gc_mark_stream")   # bitbake 2.12 and later
        if not stream:   # one request per unihash: several connections at once
            clients += [await hashserv.create_async_client(address) for _ in range(MARK_CONNECTIONS - 1)]

        async def mark_each(client, pending):
            count = 0
            for unihash in pending:
                count += (await client.gc_mark(mark, {"unihash": unihash}))["count"]
            return count

        for n, start in enumerate(range(0, len(unihashes), MARK_BATCH)):
            batch = unihashes[start:start + MARK_BATCH]
            checkpoint("mark", n + 2)
            if stream:
                marked += (await clients[0].gc_mark_stream(mark, ["unihash " + u for u in batch]))["count"]
            else:
                pending = iter(batch)
                marked += sum(await asyncio.gather(*(mark_each(c, pending) for c in clients)))
            progress.step(len(batch))
        progress.close()
        checkpoint("sweep", 1)
        return marked, (await clients[0].gc_sweep(mark))["count"]
    finally:
        for client in clients:
            await client.close()
