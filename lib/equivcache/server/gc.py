# SPDX-License-Identifier: MIT
#
# equivcache-server gc: keep a cache within a bound (size, age) with its
# mirror, indexes and hash equivalence database consistent; and check, the
# consistency it keeps. No bb import (hashserv's client comes from bitbake).
#
# What a task hash is made of decides the order: it includes the unihashes
# of the tasks it depends on, and the server keeps the first unihash it gave
# a task hash. An equivalence kept while its object is gone costs that task
# once (it rebuilds under the same unihash); an object kept while its
# equivalence is gone costs every task that depends on it. So objects go
# first, and their equivalences only a grace period later.
#
# Phases, each safe to kill at any moment (SIGKILL included):
#   plan      walk sstate-cache/ and siginfo/; nothing written
#   ledger    server/gc-ledger.db: when an object under each unihash was last
#             seen (or published); committed before anything is removed
#   index     index.json and a new sstate-index generation without what goes:
#             from then on no index names it
#   delete    the files; a download already under way gets the whole object
#             (an unlinked file stays readable), a new one a 404
#   mark      hashserv's own gc-mark from what is kept and the ledger, then
#   sweep     gc-sweep (one transaction) once the ledger covers a grace period
# A publish and a gc take turns (server/publish.lock).
#
# Used means published (publish sets a file's mtime and atime) or downloaded
# (the mirror sets atime; under nginx the kernel's relatime does, daily).
# An object's group is its .tar.zst, .siginfo and .sig and the signature data
# siginfo/ holds for the same recipe, task and unihash; signature data of
# tasks without an object form groups of their own.

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sqlite3
import sys
import time

from equivcache import catalog, names, pathkeys
from equivcache.cli import Failure, Progress, UsageError
from equivcache.files import write_json
from equivcache.formatting import human, utc_iso
from equivcache.server.database import unihashes_named
from equivcache.server.endpoints import import_hashserv, write_endpoint
from equivcache.server.history import open_history
from equivcache.server.layout import load_json, save_config, saved_config, server_config

DAY = 86400
DEFAULT_GRACE_DAYS = 30
DEFAULT_KEEP_PUBLISHES = 1
PUBLISHES_KEPT = 20
MARK_BATCH = 1000
MARK_CONNECTIONS = 8
# Test hook: "PHASE:N" makes gc kill itself with SIGKILL at step N of PHASE.
KILL_HOOK = "EQUIVCACHE_GC_TEST_KILL"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def parse_size(text):
    """Bytes of "500G", "1.5T", "800MiB", "1024" (powers of 1024)."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError("%r is not a size (e.g. 500G, 1.5T, 800M)" % text)
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def checkpoint(phase, step):
    """The test hook (KILL_HOOK): SIGKILL at step `step` of `phase`."""
    wanted = os.environ.get(KILL_HOOK)
    if wanted and wanted == "%s:%d" % (phase, step):
        os.kill(os.getpid(), signal.SIGKILL)


class Group:
    """What goes together: an object's files (paths relative to the cache)."""

    __slots__ = ("unihash", "files", "size", "used", "published")

    def __init__(self, unihash):
        self.unihash, self.files, self.size, self.used, self.published = unihash, [], 0, 0, 0

    def add(self, rel, st):
        self.files.append(rel)
        self.size += st.st_size
        self.used = max(self.used, st.st_atime, st.st_mtime)
        self.published = max(self.published, st.st_mtime)


def scan(layout):
    """The cache's groups: ({stem: object group}, [signature-only groups])."""
    return group_files(names.named_stats(layout.sstate, names.parse_sstate_name),
                       names.named_stats(layout.siginfo, names.parse_sigdata_name))


def group_files(sstate, siginfo):
    """scan() of (path, stat, parsed name) of the files of sstate-cache/ and of siginfo/."""
    objects = {}
    for rel, st, (_, _, unihash, kind) in sstate:
        stem = rel[:-len("." + kind)] if kind != "object" else rel
        group = objects.setdefault(stem, Group(unihash if kind == "object" else None))
        if kind == "object":
            group.unihash = unihash
        group.add("sstate-cache/" + rel, st)
    by_task = {}
    for stem, group in objects.items():
        recipe, task, unihash, _ = names.parse_sstate_name(stem)
        by_task[(recipe, task, unihash)] = group
    alone = []
    for rel, st, key in siginfo:
        group = by_task.get(key)
        if group is None:
            group = Group(None)
            alone.append(group)
        group.add("siginfo/" + rel, st)
    return objects, alone


def plan(groups, now, max_size=None, older_than=None, protect_since=None):
    """(evicted, kept, protected count): least recently used first."""
    evicted, kept, protected = [], [], 0
    total = sum(g.size for g in groups)
    for group in sorted(groups, key=lambda g: g.used):
        if protect_since is not None and group.published >= protect_since:
            protected += 1
            kept.append(group)
            continue
        old = older_than is not None and group.used < now - older_than * DAY
        big = max_size is not None and total > max_size
        if old or big:
            evicted.append(group)
            total -= group.size
        else:
            kept.append(group)
    return evicted, kept, protected


class Ledger:
    """server/gc-ledger.db: unihash -> when an object under it was last seen
    in the cache (or published with it); when the ledger was started."""

    def __init__(self, path, now=None):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (unihash TEXT PRIMARY KEY, time REAL NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('started', ?)",
                        (repr(time.time() if now is None else now),))
        self.db.commit()

    @property
    def started(self):
        return float(self.db.execute("SELECT value FROM meta WHERE name='started'").fetchone()[0])

    def saw(self, unihashes, when):
        self.db.executemany("INSERT INTO seen VALUES (?, ?) ON CONFLICT(unihash) DO UPDATE SET time=excluded.time "
                            "WHERE excluded.time > seen.time", ((u, when) for u in unihashes))
        self.db.commit()

    def since(self, when):
        return {r[0] for r in self.db.execute("SELECT unihash FROM seen WHERE time > ?", (when,))}

    def close(self):
        self.db.close()


def ledger_path(layout):
    return os.path.join(layout.private, "gc-ledger.db")


def note_published(layout, unihashes, started):
    """publish's part: the unihashes it merged, and when it started (the
    protection of what the last publishes brought)."""
    ledger = Ledger(ledger_path(layout))
    try:
        ledger.saw(unihashes, started)
    finally:
        ledger.close()
    path = os.path.join(layout.private, "publishes.json")
    history = (load_json(path, []) or [])[-(PUBLISHES_KEPT - 1):] + [started]
    write_json(path, history, 0o600)


def protect_since(layout, keep_publishes):
    """The start of the keep_publishes-th last publish (its files and newer ones are kept), or None."""
    history = load_json(os.path.join(layout.private, "publishes.json"), []) or []
    if keep_publishes <= 0 or not history:
        return None
    return sorted(history)[-min(keep_publishes, len(history))]


def rewrite_indexes(cache, evicted):
    """index.json and a new sstate-index generation, without `evicted`."""
    gone_sstate = {f[len("sstate-cache/"):] for g in evicted for f in g.files if f.startswith("sstate-cache/")}
    gone_sig = {f[len("siginfo/"):] for g in evicted for f in g.files if f.startswith("siginfo/")}
    cache.write_indexes(gone_sstate, gone_sig, after_index=lambda: checkpoint("index", 1))


def delete(layout, evicted, remove=None):
    """Remove the evicted files (each object before its signature files);
    empty directories after (remove(rel): a storage's, which has none)."""
    progress = Progress("removing", len(evicted))
    dirs = set()
    for step, group in enumerate(evicted, 1):
        checkpoint("delete", step)
        for rel in sorted(group.files, key=lambda f: (not f.endswith(".tar.zst"), f)):
            if remove is not None:
                remove(rel)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(layout.root, rel))
            dirs.add(os.path.dirname(os.path.join(layout.root, rel)))
        progress.step()
    progress.close()
    tops = {layout.sstate, layout.siginfo}
    for directory in sorted(dirs, key=len, reverse=True):
        while directory not in tops and directory.startswith(layout.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)


def mark_and_sweep(hashserv, address, unihashes):
    """hashserv's gc under a mark of its own: mark the rows of `unihashes`
    (rows reported meanwhile are kept too), then sweep the others in one
    transaction. Returns (marked rows, swept rows)."""
    return asyncio.run(_mark_and_sweep(hashserv, address, sorted(unihashes)))


async def _mark_and_sweep(hashserv, address, unihashes):
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


def bound_settings(layout, max_size, older_than, grace_days, keep_publishes, save):
    """The bound: the options given, else those a previous gc saved in server.json."""
    saved = saved_config(layout).get("gc", {})
    if max_size is None and older_than is None:
        max_size, older_than = saved.get("max_size"), saved.get("older_than")
        if max_size is None and older_than is None:
            raise UsageError("no bound: pass --max-size or --older-than (they are remembered for the next gc)")
    settings = {
        "max_size": max_size, "older_than": older_than,
        "grace_days": grace_days if grace_days is not None else saved.get("grace_days", DEFAULT_GRACE_DAYS),
        "keep_publishes": keep_publishes if keep_publishes is not None
        else saved.get("keep_publishes", DEFAULT_KEEP_PUBLISHES),
    }
    if save:
        config = server_config(layout)
        config["gc"] = settings
        save_config(layout, config)
    return settings


def gc(cache, bitbake, max_size=None, older_than=None, grace_days=None, keep_publishes=None, dry_run=False,
       database=None, db_password=None, out=sys.stdout, now=None):
    """Bring the cache within its bound; return the exit status."""
    layout = cache.layout
    settings = bound_settings(layout, max_size, older_than, grace_days, keep_publishes, save=not dry_run)
    now = time.time() if now is None else now
    lock = contextlib.nullcontext() if dry_run else cache.lock(out)
    with lock:
        objects, alone = cache.scan()
        groups = list(objects.values()) + alone
        evicted, kept, protected = plan(groups, now, settings["max_size"], settings["older_than"],
                                        protect_since(layout, settings["keep_publishes"]))
        total = sum(g.size for g in groups)
        freed = sum(g.size for g in evicted)
        gone = [g for g in evicted if g.unihash]
        present = sum(1 for g in objects.values() if g.unihash)
        bound = "bound %s" % human(settings["max_size"]) if settings["max_size"] is not None else "no size bound"
        if settings["older_than"] is not None:
            bound += ", unused for %g days" % settings["older_than"]
        keep_publishes = settings["keep_publishes"]
        out.write("gc: %s%d of %d objects (%s of %s) and %d signature files go, %s; %s\n" % (
            "would remove: " if dry_run else "", len(gone), present, human(freed), human(total),
            len(evicted) - len(gone), bound, "%d protected (the last %s)" % (
                protected, "publish" if keep_publishes == 1 else "%d publishes" % keep_publishes)
            if keep_publishes else "no protection of the last publishes"))
        if settings["max_size"] is not None and total - freed > settings["max_size"]:
            out.write("gc: still %s over the bound: the rest is protected\n"
                      % human(total - freed - settings["max_size"]))
        if dry_run:
            for group in sorted(gone, key=lambda g: g.used):
                out.write("  %s  %s  last used %s\n" % (human(group.size), group.files[0], utc_iso(group.used)))
            return 0
        checkpoint("plan", 1)

        ledger = Ledger(ledger_path(layout), now)
        try:
            ledger.saw({g.unihash for g in objects.values() if g.unihash}, now)
            checkpoint("ledger", 1)
            rewrite_indexes(cache, evicted)
            cache.delete_groups(evicted)
            cache.write_descriptor()
            keep = {g.unihash for g in kept if g.unihash} | ledger.since(now - settings["grace_days"] * DAY)
            started = ledger.started
        finally:
            ledger.close()

        if started > now - settings["grace_days"] * DAY:
            out.write("gc: equivalences: none removed yet: the ledger (%s) was started %s, less than the grace "
                      "period (%g days) ago\n" % (ledger_path(layout), utc_iso(started),
                                                 settings["grace_days"]))
        else:
            config = server_config(layout, database)
            hashserv = import_hashserv(bitbake, layout.private)
            with write_endpoint(layout, bitbake, hashserv, config["database"], db_password) as address:
                marked, swept = mark_and_sweep(hashserv, address, keep)
            out.write("gc: equivalences: %d rows kept (%d unihashes: objects present, or seen within %g days), "
                      "%d removed\n" % (marked, len(keep), settings["grace_days"], swept))
        out.write("gc: %d objects, %s kept\n" % (present - len(gone), human(total - freed)))
        note_history(out, lambda: open_history(layout, server_config(layout, database), db_password).note_gc(
            len(gone), freed, total - freed, settings["max_size"] or 0))
    return 0


def note_history(out, note):
    """Note a publish or gc run in the dashboard's history: its failure is a line of output, not a failure."""
    try:
        note()
    except Exception as e:   # SQLite or PostgreSQL: what the dashboard misses is not worth a failed gc
        out.write("the dashboard's history was not updated: %s\n" % e)


def check(cache, bitbake, database=None, db_password=None, out=sys.stdout):
    """What gc and publish keep true: every index entry has its file, every
    object's unihash has its equivalence. 0 if so, 1 with a line per fault."""
    layout = cache.layout
    faults = []
    doc = cache.read_json(catalog.NAME) or {}
    sstate, siginfo = cache.listing("sstate-cache"), cache.listing("siginfo")
    for obj in doc.get("objects", []):
        for rel in (obj.get("path"), obj.get("siginfo")):
            if rel and rel not in sstate:
                faults.append("index.json names sstate-cache/%s, which is missing" % rel)
    for sig in doc.get("signatures", []):
        if sig["path"] not in siginfo:
            faults.append("index.json names siginfo/%s, which is missing" % sig["path"])
    head, journal, exists = cache.read_pathkeys()
    if head is not None:
        present = {pathkeys.key_int(p) for p in sstate}
        missing = sum(1 for k in pathkeys.keys_of(journal) if k not in present)
        if missing:
            faults.append("sstate-index/%s lists %d files that sstate-cache/ lacks" % (head["journal"], missing))
    elif exists:
        faults.append("sstate-index/ is unreadable or inconsistent")
    unihashes = sorted({parsed[2] for parsed in map(names.parse_sstate_name, sstate)
                        if parsed and parsed[3] == "object"})
    config = server_config(layout, database)
    hashserv = import_hashserv(bitbake, layout.private)
    with write_endpoint(layout, bitbake, hashserv, config["database"], db_password) as address:
        with contextlib.closing(hashserv.create_client(address)) as client:
            absent = [u for u, there in zip(unihashes, unihashes_named(client, unihashes)) if not there]
    for unihash in absent:
        faults.append("an object under unihash %s has no equivalence in the database" % unihash)
    for line in faults[:50]:
        out.write("check: %s\n" % line)
    if len(faults) > 50:
        out.write("check: ... and %d more\n" % (len(faults) - 50))
    out.write("check: %s: %d index entries, %d objects with their equivalences%s\n" % (
        cache.root, len(doc.get("objects", [])), len(unihashes) - len(absent),
        ", %d faults" % len(faults) if faults else ", consistent"))
    if faults:
        raise Failure("%d faults in %s" % (len(faults), cache.root))
    return 0
