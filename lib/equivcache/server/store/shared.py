# SPDX-License-Identifier: MIT
#
# The state of a cache whose equivalences are in PostgreSQL, kept in the
# same database (tables equivcache_*, beside hashserv's and the dashboard's
# history): everything a `serve` replica, a publish or a gc needs to know
# from another one, so that several replicas on several machines serve one
# cache and none holds anything of its own that the others need.
#
#   equivcache_settings  name -> JSON: "cache" (this cache's id), "config"
#                        (server.json but for the database), "admin" (the
#                        read endpoint's admin credentials), "ledger_started"
#   equivcache_tokens    name -> the token (its secret's SHA-256 only), last use
#   equivcache_keys      name -> a producer's public key (binary, gpgv's keyring)
#   equivcache_seen, equivcache_used, equivcache_publish_starts: gc's ledger (ledger.py)
#
# The publish/gc lock is a PostgreSQL advisory lock on a connection of its
# own: released when its holder ends, or dies. A local state directory
# (--state-dir of a bucket, CACHE_DIR/server) then holds only what is its
# replica's: sockets, its log, the keyrings gpgv reads (written from the
# database), and which database the cache is in. No bb import.

import contextlib
import hashlib
import json
import os
import secrets
import threading
import time

from equivcache import files
from equivcache.cli import UsageError
from equivcache.server.hashequiv.database import in_postgresql, postgresql_dsn
from equivcache.server.hashequiv.tokens import TokenStore, USE_EVERY
from equivcache.formatting import utc_iso

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS equivcache_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS equivcache_tokens (name TEXT PRIMARY KEY, doc TEXT NOT NULL, "
    "last_used DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS equivcache_keys (name TEXT PRIMARY KEY, keyring BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS equivcache_seen (unihash TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS equivcache_used (unihash TEXT PRIMARY KEY, time DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS equivcache_publish_starts (id BIGSERIAL PRIMARY KEY, started DOUBLE PRECISION NOT NULL)",
)
# How long a replica trusts its copy of the tokens: a token added or revoked
# through another replica counts here within this many seconds.
TOKENS_FRESH = 2.0
TOKENS_RETRY = 0.2   # an unknown token read again at most this often
PUBLISHES_KEPT = 20


def is_shared(database):
    """Whether a cache with this database keeps its state in it (PostgreSQL)."""
    return bool(database) and database.startswith("postgresql")


class SharedState:
    """A cache's state in its PostgreSQL database (see above)."""

    def __init__(self, database, password=None):
        self.database = database
        self.dsn = postgresql_dsn(database)
        self.password = password
        self._ready = False
        self._mutex = threading.Lock()
        self._cache_id = None

    def where(self):
        return "the cache's PostgreSQL database"

    async def _connect(self):
        import asyncpg
        return await asyncpg.connect(self.dsn, password=self.password)

    def run(self, statements=(), query=None):
        """(sql, args) statements in one transaction (args a list of tuples:
        executemany), then query (sql, args); its rows as tuples."""
        schema = [] if self._ready else [(sql, ()) for sql in SCHEMA]
        try:
            rows = [tuple(r) for r in in_postgresql(self.dsn, self.password, schema + list(statements), query)]
        except OSError as e:
            raise UsageError("cannot reach the cache's PostgreSQL database: %s" % (e.strerror or e))
        self._ready = True
        return rows

    # -- settings ----------------------------------------------------------

    def setting(self, name, default=None):
        rows = self.run(query=("SELECT value FROM equivcache_settings WHERE name = $1", [name]))
        return json.loads(rows[0][0]) if rows else default

    def set_setting(self, name, value):
        self.run([("INSERT INTO equivcache_settings VALUES ($1, $2) ON CONFLICT (name) DO UPDATE "
                   "SET value = excluded.value", [name, json.dumps(value, sort_keys=True)])])

    def first_setting(self, name, value):
        """The setting, set to value if it had none: the same answer in every replica that races for it."""
        rows = self.run([("INSERT INTO equivcache_settings VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                          [name, json.dumps(value, sort_keys=True)])],
                        ("SELECT value FROM equivcache_settings WHERE name = $1", [name]))
        return json.loads(rows[0][0])

    @property
    def cache_id(self):
        if self._cache_id is None:
            self._cache_id = self.first_setting("cache", secrets.token_hex(16))
        return self._cache_id

    # -- the publish/gc lock -----------------------------------------------

    @contextlib.contextmanager
    def lock(self, root, out=None):
        """publish, upload commits and gc of this cache one at a time, on
        every replica: an advisory lock, held by a connection of its own."""
        key = int.from_bytes(hashlib.sha256(("equivcache:" + self.cache_id).encode()).digest()[:8], "big",
                             signed=True)
        import asyncio
        loop = asyncio.new_event_loop()
        try:
            connection = loop.run_until_complete(self._connect())
            try:
                if not loop.run_until_complete(connection.fetchval("SELECT pg_try_advisory_lock($1)", key)):
                    if out is not None:
                        out.write("waiting for the publish or gc under way on %s (here or on another replica) to "
                                  "finish\n" % root)
                        out.flush()
                    loop.run_until_complete(connection.execute("SELECT pg_advisory_lock($1)", key))
                yield
            finally:
                loop.run_until_complete(connection.close())   # the session ends: the lock is released
        finally:
            loop.close()


class SharedLedger:
    """gc's ledger (ledger.Ledger's methods) in the cache's PostgreSQL database."""

    def __init__(self, state, now=None):
        self.state = state
        self.started = float(state.first_setting("ledger_started", time.time() if now is None else now))

    where = property(lambda self: self.state.where())

    def _upsert(self, table, unihashes, when):
        self.upsert_rows(table, [(u, float(when)) for u in unihashes])

    def upsert_rows(self, table, rows):
        if rows:
            self.state.run([("INSERT INTO %s VALUES ($1, $2) ON CONFLICT (unihash) DO UPDATE SET time = "
                             "excluded.time WHERE excluded.time > %s.time" % (table, table), rows)])

    def saw(self, unihashes, when):
        self._upsert("equivcache_seen", unihashes, when)

    def use(self, unihashes, when):
        self._upsert("equivcache_used", unihashes, when)

    def last_used(self):
        return dict(self.state.run(query=("SELECT unihash, time FROM equivcache_used", [])))

    def since(self, when):
        return {r[0] for r in self.state.run(query=("SELECT unihash FROM equivcache_seen WHERE time > $1",
                                                    [float(when)]))}

    def note_publish(self, started):
        self.state.run([("INSERT INTO equivcache_publish_starts (started) SELECT $1::float8 WHERE NOT EXISTS "
                         "(SELECT 1 FROM equivcache_publish_starts WHERE started = $1::float8)", [float(started)]),
                        ("DELETE FROM equivcache_publish_starts WHERE id <= (SELECT id FROM equivcache_publish_starts "
                         "ORDER BY id DESC LIMIT 1 OFFSET %d)" % PUBLISHES_KEPT, [])])

    def publishes(self):
        return [r[0] for r in self.state.run(query=("SELECT started FROM equivcache_publish_starts ORDER BY id", []))]

    def close(self):
        pass


class SharedTokenStore(TokenStore):
    """The tokens (hashequiv/tokens.py's TokenStore) in the cache's PostgreSQL
    database; the keyrings gpgv reads are written from it into this
    replica's private directory."""

    def __init__(self, state, private_dir):
        super().__init__(private_dir)
        self.state = state
        self._read = 0.0
        self._keys = {}

    def tokens(self):
        with self.state._mutex:
            if time.monotonic() - self._read >= TOKENS_FRESH:
                self._tokens = [json.loads(r[0]) for r in self.state.run(
                    query=("SELECT doc FROM equivcache_tokens ORDER BY name", []))]
                self._read = time.monotonic()
            return self._tokens

    def refresh(self):
        with self.state._mutex:
            if time.monotonic() - self._read > TOKENS_RETRY:
                self._read = 0.0

    def keyring(self, name):
        """The producer's keyring file, written from the database when it is not there or changed."""
        path = self.key_path(name)
        token = self.find(name)
        fingerprint = (token or {}).get("key", {}) and token["key"]["fingerprint"]
        if fingerprint and (self._keys.get(name) != fingerprint or not os.path.exists(path)):
            rows = self.state.run(query=("SELECT keyring FROM equivcache_keys WHERE name = $1", [name]))
            if rows:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                files.write_atomic(path, bytes(rows[0][0]), 0o600)
                self._keys[name] = fingerprint
        return path

    def put_key(self, name, binary):
        self.state.run([("INSERT INTO equivcache_keys VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET "
                         "keyring = excluded.keyring", [name, binary])])
        super().put_key(name, binary)

    def drop_key(self, name):
        self.state.run([("DELETE FROM equivcache_keys WHERE name = $1", [name])])
        super().drop_key(name)

    def uses(self):
        return {name: utc_iso(when) for name, when in self.state.run(
            query=("SELECT name, last_used FROM equivcache_tokens WHERE last_used IS NOT NULL", []))}

    def note_use(self, name, now=None):
        now = now or time.time()
        if now - self._written_use.get(name, 0) < USE_EVERY:
            return
        self._written_use[name] = now
        self.state.run([("UPDATE equivcache_tokens SET last_used = $2 WHERE name = $1", [name, now])])

    def save_token(self, token):
        self.state.run([("INSERT INTO equivcache_tokens (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE "
                         "SET doc = excluded.doc", [token["name"], json.dumps(token, sort_keys=True)])])
        self._read = 0.0


def adopt_local(state, layout, local_config, admin, token_store, ledger_path, publishes):
    """A cache that moves its state into PostgreSQL (its database was
    PostgreSQL before this layer kept state there) brings what its private
    directory held: settings, admin credentials, tokens and keys, gc's
    ledger. Once: when the database has no settings yet."""
    if state.setting("config") is not None:
        return
    if admin:
        state.first_setting("admin", admin)
    shared = SharedTokenStore(state, layout.private)
    for token in token_store.tokens():
        shared.save_token(token)
        if token.get("key") and os.path.exists(token_store.key_path(token["name"])):
            with open(token_store.key_path(token["name"]), "rb") as f:
                shared.put_key(token["name"], f.read())
    if os.path.exists(ledger_path):
        import sqlite3
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % ledger_path, uri=True)) as db:
            ledger = SharedLedger(state, float(db.execute("SELECT value FROM meta WHERE name='started'").fetchone()[0]))
            for table in ("seen", "used"):
                try:
                    rows = [(u, float(t)) for u, t in db.execute("SELECT unihash, time FROM %s" % table)]
                except sqlite3.OperationalError:   # a ledger older than the table
                    continue
                ledger.upsert_rows("equivcache_" + table, rows)
    for started in publishes:
        SharedLedger(state).note_publish(started)
    state.set_setting("config", {k: v for k, v in local_config.items() if k != "database"})
