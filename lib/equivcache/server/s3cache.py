# SPDX-License-Identifier: MIT
#
# A cache in an S3-compatible bucket: what publish writes to
# s3://BUCKET/PREFIX. The public files (objects, downloads, signature data,
# index.json, durations.json, sstate-index/, equivcache.json) are in the
# bucket under PREFIX, laid out as in a cache directory, so that consumers
# read it over plain http(s) as they read a served cache directory
# (EQUIVCACHE_SERVER = "https://GATEWAY/BUCKET/PREFIX", the bucket readable
# anonymously); the private part (the equivalences' SQLite database or the
# PostgreSQL choice, tokens, gc's ledger, the publish lock, the dashboard's
# history) in a local state directory of the machine that publishes, as
# Layout(state directory) names it.
#
# The order is a cache directory's: objects first, then index.json and
# durations.json, then the sstate index (journal, then head.json), then the
# descriptor; each file a single PUT or a multipart upload completed only
# when whole.

import os
import threading
import time
import types

from concurrent.futures import ThreadPoolExecutor

from equivcache import catalog, descriptor as desc, pathkeys
from equivcache.cli import Progress
from equivcache.server.cache import Cache, cache_path
from equivcache.server.layout import Layout, descriptor_document
from equivcache.server.s3storage import S3Storage, parse_url


# Uploads at once: an object store answers each PUT in turn's time, not a disk's.
UPLOADS = 8


def default_state_dir(url):
    """Where the private part of the cache at url lives unless told:
    $XDG_STATE_HOME (~/.local/state)/equivcache/s3/BUCKET/PREFIX."""
    bucket, prefix = parse_url(url)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "equivcache", "s3", bucket, *(prefix.split("/") if prefix else ()))


class S3Cache(Cache):
    """Cache's operations on a bucket (see above): the same lock, commit and
    ledger, over S3Storage and listings instead of directory walks."""

    def __init__(self, url, state_dir=None, endpoint=None, storage=None):
        self.url = url.rstrip("/")
        self.storage = storage or S3Storage(self.url, endpoint)
        self.layout = Layout(state_dir or default_state_dir(self.url))
        self.layout.create()
        self.root = self.url

    # What serve's http port answers from the bucket: the descriptor, which
    # publish --to reads to find the hash server.
    proxied = (desc.NAME,)

    @property
    def served_root(self):
        """serve's http mirror serves nothing of a bucket (its state directory
        holds no published name): consumers read the bucket itself."""
        return self.layout.root

    def listing(self, area):
        """{path relative to area: size} of what the bucket holds there."""
        return {rel: size for rel, size, _ in self.storage.files(area)}

    def read_bytes(self, name):
        return self.storage.get_bytes(name)

    def put_bytes(self, name, data):
        self.storage.put_bytes(name, data, "application/json" if name.endswith(".json") else
                               "application/octet-stream")

    def missing(self, files):
        present = {}
        for area in {rel.split("/", 1)[0] for rel, _ in files}:
            present.update({cache_path(area, rel): size for rel, size in self.listing(area).items()})
        return [rel for rel, size in files if present.get(rel) != size]

    def add_files(self, area, files, source, what, now=None):
        """Upload the files the bucket lacks (or holds with another size),
        UPLOADS at a time; an error stops the publish before its commit."""
        now = time.time() if now is None else now
        present = self.listing(area)
        wanted = [(rel, length) for rel, length in files if present.get(rel) != length]
        progress = Progress(what, len(wanted))
        lock = threading.Lock()

        def put(item):
            self.storage.put_file(cache_path(area, item[0]), os.path.join(source, item[0]), now)
            with lock:
                progress.step()
        with ThreadPoolExecutor(UPLOADS) as pool:
            for result in [pool.submit(put, item) for item in wanted]:
                result.result()
        progress.close()
        return len(wanted), sum(length for _, length in wanted), len(files) - len(wanted)

    def build_catalog(self, exclude_sstate, exclude_signatures):
        sstate = self.listing("sstate-cache")
        doc = catalog.build_from(sorted(sstate.items()), sorted(self.listing("siginfo").items()),
                                 exclude=exclude_sstate, exclude_signatures=exclude_signatures)
        return doc, sorted(sstate)

    def update_pathkeys(self, sstate_paths, exclude_sstate):
        """pathkeys.update_stored(): the journal written whole, then head.json."""
        return pathkeys.update_stored(self.storage, sstate_paths, exclude=exclude_sstate)

    def scan(self):
        """gc's groups: an object store keeps no access time, so an object's
        "used" and "published" are both when it was last written."""
        from equivcache.server.gc import group_files

        def stats(area, parse):
            for rel, size, written in self.storage.files(area):
                parsed = parse(rel)
                if parsed is not None:
                    yield rel, types.SimpleNamespace(st_size=size, st_atime=written, st_mtime=written), parsed
        return group_files(stats("sstate-cache", catalog.parse_sstate_name),
                           stats("siginfo", catalog.parse_sigdata_name))

    def delete_groups(self, evicted):
        from equivcache.server.gc import delete
        delete(self.layout, evicted, remove=self.storage.remove)

    def write_descriptor(self, producer=None):
        doc = descriptor_document(self.layout, self.read_json(desc.NAME) or {}, sorted(
            {rel.split("/", 1)[0] for rel in self.listing("sstate-cache")
             if "/" in rel and len(rel.split("/", 1)[0]) > 2}), producer)
        self.put_bytes(desc.NAME, desc.dumps(doc).encode())
        return doc


def is_s3(location):
    return location.startswith("s3://")
