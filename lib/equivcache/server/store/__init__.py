# SPDX-License-Identifier: MIT
#
# The cache: one Cache over one storage protocol, whatever holds the files.
#
#   storage.py   the protocol (get, put verified and atomic, list, remove,
#                append) and what every storage shares: areas, Refused
#   local.py     a cache directory (LocalStorage), and a DL_DIR's mirrorable files
#   s3.py        an S3 bucket (S3Storage), s3://BUCKET/PREFIX, its state directory
#   cache.py     Cache: lock, publish's writes and commit, uploads, indexes,
#                descriptor, gc's groups, a write endpoint on its equivalences
#   layout.py    the private part: server.json, admin credentials, running state
#   shared.py    the same in PostgreSQL, for several replicas: settings, tokens, ledger, lock
#   groups.py    gc's object groups and its plan (least recently used first)
#   ledger.py    gc's ledger and the publishes it protects
#   history.py   the dashboard's history: reports, publishes, gc runs
#
# Imports: the layer's pure modules and hashequiv/, nothing else of server/.

import json
import os

from equivcache.cli import UsageError
from equivcache.server.store.cache import Cache
from equivcache.server.store.layout import Layout, load_json
from equivcache.server.store.shared import is_shared
from equivcache.server.store.local import LocalStorage
from equivcache.server.store.s3 import S3Storage, default_state_dir, is_s3
from equivcache.server.store.storage import AREAS


# A bucket whose cache keeps its state in PostgreSQL says so, and which
# state: a command without that database, or with another cache's, is
# refused rather than starting a second state of the same objects.
STATE_MARKER = "equivcache-state.json"


def database_of(layout, database=None, bucket=False):
    """The cache's database: the one given, else (a bucket's) $EQUIVCACHE_DATABASE, else server.json's."""
    return database or (bucket and os.environ.get("EQUIVCACHE_DATABASE")) or \
        (load_json(layout.config, {}) or {}).get("database")


def check_marker(cache):
    """A bucket's state marker against the state this command found (see STATE_MARKER)."""
    data = cache.storage.get_bytes(STATE_MARKER)
    marker = json.loads(data) if data else None
    shared = cache.layout.shared
    if shared is None:
        if marker and marker.get("state") == "postgresql":
            raise UsageError("%s keeps its state (tokens, settings, gc's ledger) in PostgreSQL: pass --database URL "
                             "or set EQUIVCACHE_DATABASE" % cache.root)
        return
    if marker is None:
        cache.storage.put_bytes(STATE_MARKER, json.dumps({"state": "postgresql", "cache": shared.cache_id},
                                                         sort_keys=True).encode() + b"\n")
    elif marker.get("cache") != shared.cache_id:
        raise UsageError("the database %s holds the state of another cache than %s: pass the database of this "
                         "one" % (shared.dsn.split("@")[-1], cache.root))


def open_cache(location, create=False, state_dir=None, s3_endpoint=None, require_objects=False, database=None,
               db_password=None):
    """The Cache at location: a cache directory (created with create, else
    it must exist; with require_objects it must hold sstate-cache/), or
    s3://BUCKET/PREFIX (its private part in state_dir, created). A bad
    location is a UsageError: one line, nothing changed. A cache whose
    database (database, else server.json's) is
    PostgreSQL keeps its state there (shared.py); $EQUIVCACHE_DATABASE names a
    bucket's, a directory's is in its server.json."""
    if is_s3(location):
        url = location.rstrip("/")
        try:
            storage = S3Storage(url, s3_endpoint)
        except ValueError as e:
            raise UsageError(str(e))
        layout = Layout(state_dir or default_state_dir(url))
        layout.create()
        database = database_of(layout, database, bucket=True)
        if is_shared(database):
            layout.share(database, db_password)
        cache = Cache(url, storage, layout)
        check_marker(cache)
        return cache
    if os.path.exists(location) and not os.path.isdir(location):
        raise UsageError("cache directory %s is not a directory" % location)
    if require_objects and not os.path.isdir(os.path.join(location, "sstate-cache")):
        raise UsageError("%s is not a cache directory (no sstate-cache/; publish a build into it first)" % location)
    if not os.path.isdir(location):
        if not create:
            raise UsageError("cache directory %s does not exist (equivcache-server serve, publish or token add "
                             "creates it)" % location)
        parent = os.path.dirname(os.path.abspath(location)) or "."
        if not os.path.isdir(parent):
            raise UsageError("cannot create cache directory %s: %s does not exist" % (location, parent))
    layout = Layout(location)
    if create:
        for area in AREAS:
            os.makedirs(os.path.join(layout.root, area), exist_ok=True)
        layout.create()
    database = database_of(layout, database)
    if state_dir:   # a replica's own directory beside a shared one
        if not is_shared(database):
            raise UsageError("--state-dir with a cache directory: for the replicas of a cache whose database is "
                             "PostgreSQL (--database); %s's is %s" % (location, database or "SQLite"))
        layout = Layout(state_dir)
        layout.create()
    if is_shared(database):
        layout.share(database, db_password)
    return Cache(os.path.abspath(location), LocalStorage(os.path.abspath(location)), layout)
