# SPDX-License-Identifier: MIT
#
# gc's ledger, in the cache's private part: when an object under each
# unihash was last seen in the cache (or published with it), when a build
# last restored one (the unihashes of the build reports sent to the cache:
# an object store keeps no access time, and a build restoring from a bucket
# never passes through serve), and the starts of the last publishes (what
# they brought is protected from the next gc). An equivalence stays while
# its unihash is in the ledger within the grace period; gc evicts the least
# recently used, reports' uses counting. No bb import.
#
#   server/gc-ledger.db     SQLite: seen (unihash, time), used (unihash, time), meta (started)
#   server/publishes.json   the starts of the last PUBLISHES_KEPT publishes
#
# A cache whose state is in PostgreSQL keeps the same there (shared.py's
# SharedLedger): open_ledger() gives the one the cache has.

import os
import sqlite3
import time

from equivcache.files import write_json
from equivcache.server.store.layout import load_json
from equivcache.server.store.shared import SharedLedger

PUBLISHES_KEPT = 20


class Ledger:
    """server/gc-ledger.db: unihash -> when an object under it was last seen
    in the cache (or published with it); when the ledger was started."""

    def __init__(self, layout, now=None):
        self.where = os.path.join(layout.private, "gc-ledger.db")
        self.db = sqlite3.connect(self.where, timeout=30)
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (unihash TEXT PRIMARY KEY, time REAL NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS used (unihash TEXT PRIMARY KEY, time REAL NOT NULL)")
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

    def use(self, unihashes, when):
        """Builds restored objects under these unihashes at `when`."""
        self.db.executemany("INSERT INTO used VALUES (?, ?) ON CONFLICT(unihash) DO UPDATE SET time=excluded.time "
                            "WHERE excluded.time > used.time", ((u, when) for u in unihashes))
        self.db.commit()

    def last_used(self):
        """{unihash: when a build last restored an object under it}."""
        return dict(self.db.execute("SELECT unihash, time FROM used"))

    def since(self, when):
        return {r[0] for r in self.db.execute("SELECT unihash FROM seen WHERE time > ?", (when,))}

    def close(self):
        self.db.close()


def open_ledger(layout, now=None):
    """The cache's ledger: server/gc-ledger.db, or its PostgreSQL database's."""
    return SharedLedger(layout.shared, now) if layout.shared else Ledger(layout, now)


def note_used(layout, unihashes, when=None):
    """What serve does with a build report: the objects it restored count as used (for gc)."""
    ledger = open_ledger(layout)
    try:
        ledger.use(unihashes, time.time() if when is None else when)
    finally:
        ledger.close()


def last_used(layout):
    """{unihash: when a build last restored it} without creating a ledger ({} if there is none)."""
    if layout.shared:
        return SharedLedger(layout.shared).last_used()
    path = os.path.join(layout.private, "gc-ledger.db")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT unihash, time FROM used"))
    except sqlite3.OperationalError:   # a ledger older than the table
        return {}
    finally:
        db.close()


def _publishes(layout):
    return os.path.join(layout.private, "publishes.json")


def note_published(layout, unihashes, started):
    """publish's part: the unihashes it merged, and when it started (the
    protection of what the last publishes brought)."""
    ledger = open_ledger(layout)
    try:
        ledger.saw(unihashes, started)
    finally:
        ledger.close()
    if layout.shared:
        ledger.note_publish(started)
        return
    history = load_json(_publishes(layout), []) or []
    if started in history:   # a commit tried again
        return
    history = history[-(PUBLISHES_KEPT - 1):] + [started]
    write_json(_publishes(layout), history, 0o600)


def protect_since(layout, keep_publishes):
    """The start of the keep_publishes-th last publish (its files and newer ones are kept), or None."""
    history = SharedLedger(layout.shared).publishes() if layout.shared else load_json(_publishes(layout), []) or []
    if keep_publishes <= 0 or not history:
        return None
    return sorted(history)[-min(keep_publishes, len(history))]
