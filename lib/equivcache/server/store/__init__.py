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
#   groups.py    gc's object groups and its plan (least recently used first)
#   ledger.py    gc's ledger and the publishes it protects
#   history.py   the dashboard's history: reports, publishes, gc runs
#
# Imports: the layer's pure modules and hashequiv/, nothing else of server/.

import os

from equivcache.cli import UsageError
from equivcache.server.store.cache import Cache
from equivcache.server.store.layout import Layout
from equivcache.server.store.local import LocalStorage
from equivcache.server.store.s3 import S3Storage, default_state_dir, is_s3
from equivcache.server.store.storage import AREAS


def open_cache(location, create=False, state_dir=None, s3_endpoint=None, require_objects=False):
    """The Cache at location: a cache directory (created with create, else
    it must exist; with require_objects it must hold sstate-cache/), or
    s3://BUCKET/PREFIX (its private part in state_dir, created). A bad
    location is a UsageError: one line, nothing changed."""
    if is_s3(location):
        url = location.rstrip("/")
        try:
            storage = S3Storage(url, s3_endpoint)
        except ValueError as e:
            raise UsageError(str(e))
        layout = Layout(state_dir or default_state_dir(url))
        layout.create()
        return Cache(url, storage, layout)
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
    return Cache(layout.root, LocalStorage(layout.root), layout)
