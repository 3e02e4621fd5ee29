# SPDX-License-Identifier: MIT
#
# gc's ledger, in the cache's private part: when an object under each
# unihash was last seen in the cache (or published with it), and the starts
# of the last publishes (what they brought is protected from the next gc).
# An equivalence stays while its unihash is in the ledger within the grace
# period. No bb import.
#
#   server/gc-ledger.db     SQLite: seen (unihash, time), meta (started)
#   server/publishes.json   the starts of the last PUBLISHES_KEPT publishes

import os
import sqlite3
import time

from equivcache.files import write_json
from equivcache.server.store.layout import load_json

PUBLISHES_KEPT = 20


class Ledger:
    """server/gc-ledger.db: unihash -> when an object under it was last seen
    in the cache (or published with it); when the ledger was started."""

    def __init__(self, layout, now=None):
        self.db = sqlite3.connect(os.path.join(layout.private, "gc-ledger.db"))
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


def _publishes(layout):
    return os.path.join(layout.private, "publishes.json")


def note_published(layout, unihashes, started):
    """publish's part: the unihashes it merged, and when it started (the
    protection of what the last publishes brought)."""
    ledger = Ledger(layout)
    try:
        ledger.saw(unihashes, started)
    finally:
        ledger.close()
    history = (load_json(_publishes(layout), []) or [])[-(PUBLISHES_KEPT - 1):] + [started]
    write_json(_publishes(layout), history, 0o600)


def protect_since(layout, keep_publishes):
    """The start of the keep_publishes-th last publish (its files and newer ones are kept), or None."""
    history = load_json(_publishes(layout), []) or []
    if keep_publishes <= 0 or not history:
        return None
    return sorted(history)[-min(keep_publishes, len(history))]
