# SPDX-License-Identifier: MIT
#
# The cache's history, for its dashboard: the build reports consumers send
# (EQUIVCACHE_REPORT_TO), the publishes and the gc runs. Kept in the
# cache's database: server/history.db (SQLite) beside a cache whose
# equivalences are in SQLite, the same PostgreSQL database as the
# equivalences otherwise (tables equivcache_*, next to hashserv's). Bounded:
# at most `max_rows` rows of each kind, none older than `max_days`.
# No bb import.

import contextlib
import json
import os
import sqlite3
import threading
import time

from equivcache.server.hashequiv.database import in_postgresql, is_sqlite, postgresql_dsn

MAX_ROWS = 10000
MAX_DAYS = 180
DAY = 86400.0

# (name, SQLite type, PostgreSQL type) of each table's columns after "id" and "at".
REPORT_COLUMNS = (
    ("reporter", "TEXT", "TEXT"), ("build", "TEXT", "TEXT"), ("targets", "TEXT", "TEXT"),
    ("succeeded", "INTEGER", "INTEGER"), ("wanted", "INTEGER", "INTEGER"), ("local_hits", "INTEGER", "INTEGER"),
    ("mirror_hits", "INTEGER", "INTEGER"), ("missed", "INTEGER", "INTEGER"), ("tasks_run", "INTEGER", "INTEGER"),
    ("restored", "INTEGER", "INTEGER"), ("timed", "INTEGER", "INTEGER"), ("unknown", "INTEGER", "INTEGER"),
    ("producer_seconds", "REAL", "DOUBLE PRECISION"), ("setscene_seconds", "REAL", "DOUBLE PRECISION"),
    ("net_seconds", "REAL", "DOUBLE PRECISION"), ("misses", "TEXT", "TEXT"),
    ("covered", "INTEGER", "INTEGER"), ("wall_seconds", "REAL", "DOUBLE PRECISION"),
)
# Columns added since a table was first made: (table, name, SQLite type,
# PostgreSQL type), added to an older table on first use.
ADDED_COLUMNS = (("equivcache_reports", "covered", "INTEGER", "INTEGER"),
                 ("equivcache_reports", "wall_seconds", "REAL", "DOUBLE PRECISION"),
                 ("equivcache_publishes", "publish_id", "TEXT", "TEXT"))
MIGRATE = "-- the columns an older SQLite table lacks"
PUBLISH_COLUMNS = (
    ("producer", "TEXT", "TEXT"), ("objects", "INTEGER", "BIGINT"), ("files", "INTEGER", "BIGINT"),
    ("bytes", "INTEGER", "BIGINT"), ("publish_id", "TEXT", "TEXT"),
)
GC_COLUMNS = (
    ("evicted", "INTEGER", "BIGINT"), ("evicted_bytes", "INTEGER", "BIGINT"), ("kept_bytes", "INTEGER", "BIGINT"),
    ("max_size", "INTEGER", "BIGINT"),
)
TABLES = {"equivcache_reports": REPORT_COLUMNS, "equivcache_publishes": PUBLISH_COLUMNS, "equivcache_gc": GC_COLUMNS}


def history_path(layout):
    return os.path.join(layout.private, "history.db")


def report_row(doc):
    """The columns a report keeps (report.py's document, as reportsend.compact() sends it)."""
    s, saved = doc["setscene"], doc["saved"]
    return {
        "reporter": doc.get("reporter") or "",
        "build": doc["build"]["name"],
        "targets": " ".join(doc["build"]["targets"]),
        "succeeded": int(bool(doc["build"]["succeeded"])),
        "wanted": s["wanted"], "local_hits": s["local"], "mirror_hits": s["mirror"], "missed": s["missed"],
        "tasks_run": doc["tasks"]["run"],
        "restored": saved["restored"], "timed": saved["timed"], "unknown": saved["unknown"],
        "producer_seconds": saved["producer_seconds"], "setscene_seconds": saved["setscene_seconds"],
        "net_seconds": saved["net_seconds"],
        "misses": json.dumps([[t["recipe"], t["task"], t["class"]] for t in doc["misses"]["tasks"]]),
        "covered": saved.get("covered", 0), "wall_seconds": doc["build"].get("wall_seconds"),
    }


class History:
    """The history of one cache in its database (see above)."""

    def __init__(self, layout, database, password=None, max_rows=MAX_ROWS, max_days=MAX_DAYS):
        self.max_rows, self.max_days = max_rows, max_days
        self.sqlite = is_sqlite(database)
        self.path = history_path(layout) if self.sqlite else None
        self.dsn = None if self.sqlite else postgresql_dsn(database)
        self.password = password
        self.lock = threading.Lock()
        self._ready = False

    def where(self):
        return ("sqlite: " + self.path) if self.sqlite else "the cache's PostgreSQL database"

    # -- the two backends, one SQL ("?" placeholders) ----------------------

    def _execute(self, statements, query=None):
        """Run (sql, args) statements in one transaction, then query; its rows as dicts."""
        with self.lock:
            if not self._ready:
                statements = self._schema() + list(statements)
            if self.sqlite:
                rows = self._sqlite(statements, query)
            else:
                rows = [dict(r) for r in in_postgresql(
                    self.dsn, self.password, [(self._numbered(sql), args) for sql, args in statements],
                    (self._numbered(query[0]), query[1]) if query else None)]
            self._ready = True
            return rows

    def _schema(self):
        created = []
        for table, columns in TABLES.items():
            key = "INTEGER PRIMARY KEY AUTOINCREMENT" if self.sqlite else "BIGSERIAL PRIMARY KEY"
            real = "REAL" if self.sqlite else "DOUBLE PRECISION"
            cols = ", ".join("%s %s" % (c[0], c[1] if self.sqlite else c[2]) for c in columns)
            created.append(("CREATE TABLE IF NOT EXISTS %s (id %s, at %s NOT NULL, %s)" % (table, key, real, cols), ()))
            created.append(("CREATE INDEX IF NOT EXISTS %s_at ON %s (at)" % (table, table), ()))
        if self.sqlite:
            created.append((MIGRATE, ()))
        else:
            created += [("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s" % (t, c, pg), ())
                        for t, c, _, pg in ADDED_COLUMNS]
        return created

    @staticmethod
    def _migrate_sqlite(db):
        """SQLite has no ADD COLUMN IF NOT EXISTS: the columns an older table lacks, added."""
        for table, column, kind, _ in ADDED_COLUMNS:
            if column not in {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}:
                db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, kind))

    def _sqlite(self, statements, query):
        db = sqlite3.connect(self.path, timeout=30)
        with contextlib.closing(db):
            if not self._ready:
                os.chmod(self.path, 0o600)
            db.row_factory = sqlite3.Row
            with db:
                for sql, args in statements:
                    if sql is MIGRATE:
                        self._migrate_sqlite(db)
                    else:
                        db.execute(sql, args)
            return [dict(r) for r in db.execute(*query)] if query else []

    @staticmethod
    def _numbered(sql):
        parts = sql.split("?")
        return parts[0] + "".join("$%d%s" % (i, p) for i, p in enumerate(parts[1:], 1))

    # -- writing -----------------------------------------------------------

    def _add(self, table, values, now=None, replaces=()):
        """Add a row (after the statements `replaces`, which remove the row it replaces); its id."""
        now = time.time() if now is None else now
        names = ["at"] + list(values)
        insert = ("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(names), ", ".join("?" * len(names))),
                  [now] + list(values.values()))
        bound = [
            ("DELETE FROM %s WHERE at < ?" % table, [now - self.max_days * DAY]),
            ("DELETE FROM %s WHERE id <= (SELECT id FROM %s ORDER BY id DESC LIMIT 1 OFFSET %d)"
             % (table, table, self.max_rows), []),
        ]
        rows = self._execute(list(replaces) + [insert] + bound, ("SELECT MAX(id) AS id FROM %s" % table, []))
        return rows[0]["id"]

    def add_report(self, doc, now=None):
        """Keep a build report (validated by the caller); its id."""
        return self._add("equivcache_reports", report_row(doc), now)

    def note_publish(self, producer, objects, files, size, now=None, publish_id=None):
        """A publish; one named publish_id again (its commit tried again) replaces its row."""
        replaces = [("DELETE FROM equivcache_publishes WHERE publish_id = ?", [publish_id])] if publish_id else []
        return self._add("equivcache_publishes", {"producer": producer, "objects": objects, "files": files,
                                                  "bytes": size, "publish_id": publish_id}, now, replaces)

    def note_gc(self, evicted, evicted_bytes, kept_bytes, max_size, now=None):
        return self._add("equivcache_gc", {"evicted": evicted, "evicted_bytes": evicted_bytes,
                                           "kept_bytes": kept_bytes, "max_size": max_size}, now)

    # -- reading -----------------------------------------------------------

    def rows(self, table, limit=MAX_ROWS):
        """The newest `limit` rows of a table, oldest first."""
        if table not in TABLES:
            raise ValueError(table)
        rows = self._execute([], ("SELECT * FROM %s ORDER BY id DESC LIMIT %d" % (table, int(limit)), []))
        return rows[::-1]

    def exists(self):
        """Whether anything was ever kept (no database is made just to read)."""
        return os.path.exists(self.path) if self.sqlite else True


def open_history(layout, config, password=None):
    """The History of a cache, from its server.json (the database, the bounds)."""
    bounds = config.get("history", {})
    return History(layout, config.get("database") or layout.database, password,
                   bounds.get("max_rows", MAX_ROWS), bounds.get("max_days", MAX_DAYS))


def note_history(out, note):
    """Note a publish or gc run in the dashboard's history: its failure is a line of output, not a failure."""
    try:
        note()
    except Exception as e:   # SQLite or PostgreSQL: what the dashboard misses is not worth a failed publish or gc
        out.write("the dashboard's history was not updated: %s\n" % e)
