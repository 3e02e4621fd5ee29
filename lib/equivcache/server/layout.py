# SPDX-License-Identifier: MIT
#
# A cache directory, as equivcache-server publishes and serves it, and the
# files of its private server/ directory. No bb import.
#
#   <cache>/equivcache.json    the descriptor (served)
#   <cache>/index.json         the objects present (served)
#   <cache>/durations.json     how long each object's task took its producer (served;
#                              lib/equivcache/durations.py)
#   <cache>/sstate-index/      the files of sstate-cache/, for the builds' mirror
#                              availability check (served; lib/equivcache/pathkeys.py)
#   <cache>/sstate-cache/      sstate objects, as SSTATE_DIR lays them out (served)
#   <cache>/downloads/         source archives, as DL_DIR has them (served)
#   <cache>/siginfo/           the signature data of every task the producers
#                              ran, as STAMPS_DIR has it (served, for equivcache-doctor)
#   <cache>/hashserv.db        the hash equivalence database (SQLite backend)
#   <cache>/server/            private, mode 0700: server.json, admin.json and
#                              tokens.json (mode 0600), the write socket, state.json,
#                              serve.log

import json
import logging
import os
import secrets
import socket

from equivcache import descriptor as desc
from equivcache import catalog, durations, files, names, pathkeys
from equivcache.cli import Failure, UsageError
from equivcache.formatting import utc_iso
from equivcache.server.database import show_database
from equivcache.server.endpoints import DEFAULT_HASHSERV_PORT, tcp_address

logger = logging.getLogger("equivcache.server")


# What the http mirror serves: nothing else in the cache directory.
PUBLIC = (desc.NAME, catalog.NAME, durations.NAME, "sstate-cache", "downloads", "siginfo", pathkeys.DIRECTORY)
ADMIN_USER = "admin"


class Layout:
    """The paths of one cache directory."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.descriptor = os.path.join(self.root, desc.NAME)
        self.index = os.path.join(self.root, catalog.NAME)
        self.durations = os.path.join(self.root, durations.NAME)
        self.sstate_index = os.path.join(self.root, pathkeys.DIRECTORY)
        self.sstate = os.path.join(self.root, "sstate-cache")
        self.downloads = os.path.join(self.root, "downloads")
        self.siginfo = os.path.join(self.root, "siginfo")
        self.database = os.path.join(self.root, "hashserv.db")
        self.private = os.path.join(self.root, "server")
        self.config = os.path.join(self.private, "server.json")
        self.admin = os.path.join(self.private, "admin.json")
        self.socket = os.path.join(self.private, "hashserv.sock")
        self.state = os.path.join(self.private, "state.json")
        self.log = os.path.join(self.private, "serve.log")
        self.publish_lock = os.path.join(self.private, "publish.lock")

    def create(self):
        for path in (self.sstate, self.downloads, self.siginfo):
            os.makedirs(path, exist_ok=True)
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


def check_cache_dir(path, create):
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError("cache directory %s is not a directory" % path)
    if not os.path.isdir(path):
        if not create:
            raise UsageError("cache directory %s does not exist (publish a build into it first, "
                             "or create it)" % path)
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(parent):
            raise UsageError("cannot create cache directory %s: %s does not exist" % (path, parent))
    from equivcache.server.cache import Cache
    cache = Cache(path)
    cache.layout.create()
    return cache


def saved_config(layout):
    """server.json: {"database": ..., "hashserv": [public addresses]}, {} at first."""
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
    files.write_json(layout.config, {k: v for k, v in config.items()
                                     if not (k == "database" and v == layout.database)}, 0o600)


def admin_credentials(layout):
    """The admin user of the read endpoint, generated on first start, mode 0600."""
    creds = load_json(layout.admin)
    if creds is None:
        creds = {"username": ADMIN_USER, "password": secrets.token_urlsafe(32)}
        files.write_json(layout.admin, creds, 0o600)
        # The same password for the systemd units of `config --systemd`.
        files.write_atomic(os.path.join(layout.private, "admin.env"),
                           "HASHSERVER_ADMIN_PASSWORD=%s\n" % creds["password"], 0o600)
        logger.info("generated the admin credentials of the read endpoint in %s (mode 0600)", layout.admin)
    return creds


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


def write_descriptor(layout, producer=None):
    """Refresh the descriptor: the read endpoint's public address as serve
    saved it in server.json; what is not given kept from the current one."""
    doc = descriptor_document(layout, load_json(layout.descriptor, {}) or {}, names.nativelsbstrings(layout.sstate),
                              producer)
    files.write_atomic(layout.descriptor, desc.dumps(doc))
    return doc


def descriptor_document(layout, current, nativelsbstrings, producer=None):
    """The descriptor of a cache whose private part is layout's, current
    being the one published now ({} if none)."""
    addresses = saved_config(layout).get("hashserv") or current.get("hashserv") or \
        [tcp_address(socket.getfqdn(), DEFAULT_HASHSERV_PORT)]
    return {
        "format": desc.FORMAT,
        "version": desc.VERSION,
        "generated": utc_iso(),
        "hashserv": addresses,
        "sstate": "sstate-cache",
        "downloads": "downloads",
        "nativelsbstrings": nativelsbstrings,
        "producer": producer if producer is not None else current.get("producer", {}),
    }
