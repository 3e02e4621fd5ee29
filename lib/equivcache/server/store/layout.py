# SPDX-License-Identifier: MIT
#
# The private part of a cache: what its server keeps for itself and never
# publishes. In a cache directory it is CACHE_DIR/server/ (and the SQLite
# database beside it); for a cache in a bucket, the same under its state
# directory (store/s3.py's default_state_dir()).
#
#   <root>/hashserv.db        the hash equivalence database (SQLite backend)
#   <root>/server/            private, mode 0700: server.json, admin.json and
#                             tokens.json (mode 0600), the write socket,
#                             state.json, serve.log, publish.lock, gc's ledger
#
# A cache whose database is PostgreSQL keeps its state there instead
# (shared.py), for every replica: server.json then names the database only,
# and the directory holds what is this replica's (sockets, log, keyrings).
#
# The published part (objects, downloads, signature data, index.json,
# durations.json, sstate-index/, equivcache.json) is the storage's
# (storage.py). No bb import.

import json
import logging
import os
import secrets

from equivcache import files
from equivcache.cli import Failure, UsageError
from equivcache.server.hashequiv.database import show_database
from equivcache.server.hashequiv.tokens import TokenStore
from equivcache.server.store.shared import SharedState, SharedTokenStore, adopt_local

logger = logging.getLogger("equivcache.server")


ADMIN_USER = "admin"


class Layout:
    """The paths of a cache's private part (see above)."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.database = os.path.join(self.root, "hashserv.db")
        self.private = os.path.join(self.root, "server")
        self.config = os.path.join(self.private, "server.json")
        self.admin = os.path.join(self.private, "admin.json")
        self.socket = os.path.join(self.private, "hashserv.sock")
        self.state = os.path.join(self.private, "state.json")
        self.log = os.path.join(self.private, "serve.log")
        self.publish_lock = os.path.join(self.private, "publish.lock")
        self.shared = None   # SharedState of a cache whose state is in PostgreSQL

    def share(self, database, password=None):
        """Keep the cache's state in its PostgreSQL database (shared.py), bringing what this directory held."""
        self.shared = SharedState(database, password)
        admin = load_json(self.admin)
        adopt_local(self.shared, self, load_json(self.config, {}) or {}, admin, TokenStore(self.private),
                    os.path.join(self.private, "gc-ledger.db"), load_json(os.path.join(self.private,
                                                                                      "publishes.json"), []) or [])

    def where(self, what):
        """Where a part of the state is kept, for messages."""
        return self.shared.where() if self.shared else what

    def create(self):
        os.makedirs(self.private, mode=0o700, exist_ok=True)
        os.chmod(self.private, 0o700)


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise Failure("%s is not valid JSON (%s); fix or remove it" % (path, e))


def saved_config(layout):
    """server.json: {"database": ..., "hashserv": [public addresses]}, {} at first
    (with a shared state: the database's settings, and the database)."""
    if layout.shared:
        return dict(layout.shared.setting("config", {}) or {}, database=layout.shared.database)
    return load_json(layout.config, {}) or {}


def saved_database(layout):
    """The cache's database: the one server.json names, else SQLite in the cache."""
    return saved_config(layout).get("database") or layout.database


def server_config(layout, database=None):
    """The cache's server.json (database choice), updated with --database.
    A cache keeps the database it was created with: changing it would
    split the equivalences from the objects."""
    config = saved_config(layout)
    current = config.get("database") or layout.database
    if database and database != current and (config.get("database") or os.path.exists(layout.database)):
        raise UsageError("cache %s uses the database %s, not %s; a cache keeps one database"
                         % (layout.root, show_database(current), show_database(database)))
    config["database"] = database or current
    save_config(layout, config)
    return config


def save_config(layout, config):
    """Write server.json. The default database (SQLite in the cache) is not
    named: a cache directory moved or copied keeps using its own."""
    if layout.shared:
        layout.shared.set_setting("config", {k: v for k, v in config.items() if k != "database"})
        config = {"database": config.get("database")}
    files.write_json(layout.config, {k: v for k, v in config.items()
                                     if not (k == "database" and v == layout.database)}, 0o600)


def admin_credentials(layout):
    """The admin user of the read endpoint, generated on first start, mode 0600."""
    if layout.shared:
        creds = layout.shared.first_setting("admin", {"username": ADMIN_USER, "password": secrets.token_urlsafe(32)})
        env = "HASHSERVER_ADMIN_PASSWORD=%s\n" % creds["password"]
        path = os.path.join(layout.private, "admin.env")
        if load_text(path) != env:
            files.write_atomic(path, env, 0o600)
        return creds
    creds = load_json(layout.admin)
    if creds is None:
        creds = {"username": ADMIN_USER, "password": secrets.token_urlsafe(32)}
        files.write_json(layout.admin, creds, 0o600)
        # The same password for the systemd units of `config --systemd`.
        files.write_atomic(os.path.join(layout.private, "admin.env"),
                           "HASHSERVER_ADMIN_PASSWORD=%s\n" % creds["password"], 0o600)
        logger.info("generated the admin credentials of the read endpoint in %s (mode 0600)", layout.admin)
    return creds


def load_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def token_store(layout):
    """The cache's tokens: server/tokens.json, or its PostgreSQL database."""
    return SharedTokenStore(layout.shared, layout.private) if layout.shared else TokenStore(layout.private)


def running_state(layout):
    """state.json if its server process is alive, else None."""
    state = load_json(layout.state)
    if not state:
        return None
    try:
        os.kill(state["pid"], 0)
    except (OSError, KeyError, TypeError):
        return None
    return state
