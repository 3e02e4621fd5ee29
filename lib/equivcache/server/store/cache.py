# SPDX-License-Identifier: MIT
#
# One cache, over one storage: what local publish, remote uploads, gc and
# check do to a cache, whether its files are in a directory or a bucket
# (storage.py: the storage is asked, never which one it is).
#
#   Cache.lock()        publish, upload commits and gc take turns
#   Cache.missing()     which of a producer's files the cache lacks
#   Cache.add_files()   a local producer's files, each written atomically
#   Cache.receive()     one uploaded file: verified, then given its name
#   Cache.commit()      once per publish, in the lock: index.json, durations.json,
#                       the sstate index, gc's ledger, the descriptor; serve's
#                       commits list the cache once (kept_listing())
#   Cache.endpoint()    a write endpoint on the cache's equivalences
#
# The order of a commit is what readers rely on: objects first, then
# index.json and durations.json, then the sstate index (journal, then
# head.json), then the descriptor. No bb import.

import contextlib
import fcntl
import json
import os
import socket
import threading
import time

from concurrent.futures import Future, ThreadPoolExecutor

from equivcache import catalog, descriptor as desc, durations, names, pathkeys
from equivcache.background import Background
from equivcache.cli import Progress
from equivcache.files import json_bytes
from equivcache.formatting import utc_iso
from equivcache.server.hashequiv.processes import DEFAULT_HASHSERV_PORT, tcp_address, write_endpoint
from equivcache.server.store.groups import group_files
from equivcache.server.store.layout import admin_credentials, saved_config, server_config, token_store
from equivcache.server.store.ledger import note_published
from equivcache.server.store.storage import KEYS, Refused, cache_path

# The sstate index's head, as the cache's other files are named.
HEAD = pathkeys.DIRECTORY + "/" + pathkeys.HEAD


class Cache:
    """A cache: where users name it (root: a directory's absolute path, or
    s3://BUCKET/PREFIX), its storage, and its private part (layout)."""

    def __init__(self, root, storage, layout):
        self.root, self.storage, self.layout = root, storage, layout
        # {area: {path: size}} a publish listed (a bucket's add_files), kept
        # up to date by it until its commit, which lists nothing again and
        # forgets it: in publish's lock, only uploads not yet committed (which
        # their own commit lists) can change the cache meanwhile.
        self.listed = None
        # {name: Background reading it} of the files a bucket's commit reads (prefetch()).
        self.fetching = {}
        # What this process's last commit of an upload left (kept_listing()):
        # (index.json's bytes, the sstate index's head.json bytes, the listing).
        self.kept = None
        # {cache path: size} of the files receive() stored or found since that commit.
        self.received = {}
        # {sstate-cache/ path: (its parsed name, its sstate index key)} of the last index (sstate_names()).
        self.names = {}

    @property
    def served_root(self):
        """The directory serve's http mirror serves: the cache's own, or (a
        bucket, which consumers read themselves) its state directory, which
        holds no published name."""
        return self.storage.local_root or self.layout.root

    @property
    def proxied(self):
        """What serve's http port answers from the storage itself: a bucket's
        descriptor, which publish --to reads to find the hash server."""
        return () if self.storage.local_root else (desc.NAME,)

    @contextlib.contextmanager
    def lock(self, out=None):
        """publish, upload commits and gc, one at a time (server/publish.lock,
        or an advisory lock in the PostgreSQL database of a shared state, for
        every replica; released if the holder dies)."""
        if self.layout.shared:
            with self.layout.shared.lock(self.root, out):
                yield
            return
        with open(self.layout.publish_lock, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if out is not None:
                    out.write("waiting for the publish or gc under way in %s to finish\n" % self.root)
                    out.flush()
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def endpoint(self, bitbake, database=None, db_password=None, admin=False):
        """(hashserv module, address, server.json) of a write endpoint on the
        cache's database: the running server's socket, else a private
        bitbake-hashserv for the time of the block (with the cache's admin
        user if asked: a running server has it)."""
        with self.starting_endpoint(bitbake, database, db_password, admin) as (ready, config):
            yield ready.result() + (config,)

    @contextlib.contextmanager
    def starting_endpoint(self, bitbake, database=None, db_password=None, admin=False, config=None):
        """endpoint() made ready while the block runs: (a Background whose
        result() is (hashserv module, address), server.json)."""
        config = config or server_config(self.layout, database)
        creds = admin_credentials(self.layout) if admin else None
        with write_endpoint(self.layout, bitbake, config["database"], db_password, creds) as ready:
            yield ready, config

    def listing(self, area):
        """{path relative to area: size} of the files the cache holds there."""
        if self.listed is not None and area in self.listed:
            return dict(self.listed[area])
        found = {f.rel: f.size for f in self.storage.files(area)}
        if self.listed is not None:
            self.listed[area] = dict(found)
        return found

    def read_bytes(self, name, again=False):
        """A file of the cache (index.json, sstate-index/head.json...), None if
        absent; again: what was read is what the commit's next read of it gets."""
        fetching = self.fetching.pop(name, None)
        data = fetching.result() if fetching is not None else self.storage.get_bytes(name)
        if again:
            self.fetching[name] = Future()
            self.fetching[name].set_result(data)
        return data

    def prefetch(self, names):
        """Start reading the files a commit reads, each in a thread of its own,
        where every read is a round trip (a bucket: a commit's few GETs at once,
        not one after another). In publish's lock: nothing else writes them."""
        if self.storage.lists:
            self.fetching = {name: Background(self.storage.get_bytes, name) for name in names}

    def read_json(self, name):
        """A JSON file of the cache (index.json, equivcache.json), None if absent or not JSON."""
        try:
            data = self.read_bytes(name)
            return json.loads(data) if data is not None else None
        except (OSError, ValueError):
            return None

    def read_pathkeys(self):
        """(head, journal) of the sstate index, (None, b"") if none or unusable; and whether head.json exists."""
        def get(name):
            return self.read_bytes(pathkeys.DIRECTORY + "/" + name)
        return pathkeys.read_with(get) + (get(pathkeys.HEAD) is not None,)

    def missing(self, files):
        """Of (path relative to the cache, size) pairs, the paths the cache
        lacks or holds with another size."""
        sizes = self.storage.sizes([rel for rel, _ in files])
        return [rel for rel, size in files if sizes[rel] != size]

    def add_files(self, area, files, source, what, now=None):
        """Write (path relative to source, size) files the cache lacks into
        area, storage.uploads at a time; every file published, written or
        already there, gets the time of now (gc's "published" and "used").
        An error stops the publish before its commit. Returns (written,
        bytes, present)."""
        now = time.time() if now is None else now
        if self.storage.lists:
            self.listed = {} if self.listed is None else self.listed
            listed = self.listing(area)
            sizes = {cache_path(area, rel): listed.get(rel) for rel, _ in files}
        else:
            sizes = self.storage.sizes([cache_path(area, rel) for rel, _ in files])
        wanted = []
        for rel, length in files:
            if sizes[cache_path(area, rel)] == length:
                self.storage.touch(cache_path(area, rel), now)
            else:
                wanted.append((rel, length))
        progress = Progress(what, len(wanted))
        lock = threading.Lock()

        def put(item):
            self.storage.put_file(cache_path(area, item[0]), os.path.join(source, item[0]), now)
            with lock:
                progress.step()
        if self.storage.uploads > 1:
            with ThreadPoolExecutor(self.storage.uploads) as pool:
                for result in [pool.submit(put, item) for item in wanted]:
                    result.result()
        else:
            for item in wanted:
                put(item)
        progress.close()
        if self.listed is not None:
            self.listed[area].update(wanted)
        return len(wanted), sum(length for _, length in wanted), len(files) - len(wanted)

    def receive(self, rel, stream, length, sha256, now=None, check=None, replace=False, sync=True, room=None):
        """One uploaded file (rel checked by the caller; check, replace and
        sync as storage.put_stream's): True if the cache had it already.
        room: the free space the caller found (a batch asks once)."""
        if length > (self.storage.free_space() if room is None else room):
            raise Refused(507, "%s: %d bytes do not fit on the cache's disk" % (rel, length))
        had = self.storage.put_stream(rel, stream, length, sha256, time.time() if now is None else now,
                                      check, replace, sync)
        self.received[rel] = length
        return had

    def discard_superseded(self, unihashes, named):
        """Remove the sstate files under those of `unihashes` that no
        equivalence names (named(list) -> [bool], the database's answer): a
        producer's objects for outputs the cache already had under another
        unihash, which no consumer would ask for. Returns the count removed."""
        candidates = sorted(unihashes)
        if not candidates:
            return 0
        orphans = {u for u, there in zip(candidates, named(candidates)) if not there}
        removed = 0
        for rel in list(self.listing("sstate-cache")):
            parsed = names.parse_sstate_name(rel)
            if parsed and parsed[2] in orphans:
                self.storage.remove(cache_path("sstate-cache", rel))
                if self.listed is not None and "sstate-cache" in self.listed:
                    del self.listed["sstate-cache"][rel]
                removed += 1
        return removed

    def write_indexes(self, exclude_sstate=(), exclude_signatures=(), after_index=None, new_durations=None):
        """index.json, durations.json (with new_durations, {(recipe, task,
        unihash): entry}, it lacked), then the sstate index, of what the
        cache holds (less what gc is about to remove). Returns (index
        document, sstate-cache/'s paths, sstate index entries, appended,
        rewritten, the sstate index's head.json as written)."""
        sstate = self.listing("sstate-cache")
        ordered = sorted(sstate)
        named = self.sstate_names(ordered)
        doc = catalog.build_from([(rel, sstate[rel]) for rel in ordered], sorted(self.listing("siginfo").items()),
                                 exclude=exclude_sstate, exclude_signatures=exclude_signatures,
                                 parse=lambda rel: named[rel][0])
        present = {(o["recipe"], o["task"], o["unihash"]) for o in doc["objects"] if o["path"]}
        # A build report reads both in one request: index.json carries the durations too.
        current = self.read_json(catalog.NAME)
        current = current if isinstance(current, dict) else {}
        kept = current.get("durations") if isinstance(current.get("durations"), dict) else \
            self.read_json(durations.NAME)
        timed = durations.document(durations.merged(durations.entries_of(kept), new_durations or {}, present))
        if not same_but_when(current, dict(doc, durations=timed)):   # a publish of nothing new writes nothing
            self.storage.put_bytes(catalog.NAME, json_bytes(dict(doc, durations=timed), compact=True))
            self.storage.put_bytes(durations.NAME, json_bytes(timed, compact=True))
        if after_index is not None:
            after_index()
        return (doc, ordered) + tuple(pathkeys.update(
            self.storage, ordered, exclude=exclude_sstate,
            get=lambda name: self.read_bytes(pathkeys.DIRECTORY + "/" + name), key_of=lambda rel: named[rel][1]))

    def sstate_names(self, paths):
        """{path: (names.parse_sstate_name(path), pathkeys.key(path))} of
        sstate-cache/'s paths, those the last call had taken from it: the
        commits of serve's process work out the new paths' only."""
        known, self.names = self.names, {}
        for rel in paths:
            self.names[rel] = known.get(rel) or (names.parse_sstate_name(rel), pathkeys.key(rel))
        return self.names

    def write_descriptor(self, producer=None, sstate_paths=None, head=None):
        """Refresh the descriptor: the read endpoint's public address as serve
        saved it in server.json; the NATIVELSBSTRINGs of sstate_paths (else
        those it names, or of a listing if it names none); the sstate index's
        head as it is now (written before the descriptor, always; read unless
        given); what is not given kept from the current one."""
        current = self.read_json(desc.NAME) or {}
        config = saved_config(self.layout)
        if sstate_paths is None and "nativelsbstrings" in current:
            native = current["nativelsbstrings"]
        else:
            native = names.nativelsbstrings(self.listing("sstate-cache") if sstate_paths is None else sstate_paths)
        doc = {
            "format": desc.FORMAT,
            "version": desc.VERSION,
            "generated": utc_iso(),
            "hashserv": config.get("hashserv") or current.get("hashserv") or
            [tcp_address(socket.getfqdn(), DEFAULT_HASHSERV_PORT)],
            "sstate": "sstate-cache",
            "downloads": "downloads",
            "nativelsbstrings": native,
            "producer": producer if producer is not None else current.get("producer", {}),
        }
        head = head or self.read_json(HEAD)
        if head is not None:   # consumers read it here, and skip a request for head.json
            doc["sstate_index"] = head
        if config.get("require_signatures"):
            doc["signatures"] = {"required": True, "keys": [
                {"producer": t["name"], "fingerprint": t["key"]["fingerprint"], "keyids": t["key"]["keyids"],
                 "url": "%s/%s.asc" % (KEYS, t["name"])}
                for t in token_store(self.layout).active("producer") if t.get("key")]}
        self.storage.put_bytes(desc.NAME, desc.dumps(doc).encode())
        return doc

    def scan(self):
        """gc's groups of the cache's files (groups.group_files)."""
        return group_files(self.storage.files("sstate-cache"), self.storage.files("siginfo"))

    def state(self):
        """What the dashboard shows of the cache: its objects and their size with
        their signature files (gc's groups, as status counts them), and gc's bound."""
        bound = saved_config(self.layout).get("gc") or {}
        objects, alone = self.scan()
        return {"objects": sum(1 for g in objects.values() if g.unihash),
                "bytes": sum(g.size for g in list(objects.values()) + alone),
                "max_size": bound.get("max_size"), "older_than": bound.get("older_than")}

    def commit(self, unihashes, started, producer=None, superseded=(), named=None, new_durations=None,
               files=None):
        """What a publish ends with, in the lock: the objects no equivalence
        names dropped (discard_superseded), the indexes and durations, gc's
        ledger (the unihashes it brought, and when it started), the descriptor.
        files: the (cache path, size) pairs an upload's publish covers, where
        the commit may add them to the last one's listing (kept_listing())."""
        self.prefetch([catalog.NAME, desc.NAME, HEAD])
        try:
            listing = self.kept_listing(files)
            if listing is not None:
                self.listed = listing
            elif self.listed is None:   # what write_indexes() lists is kept in it
                self.listed = {}
            discarded = self.discard_superseded(superseded, named) if named else 0
            doc, sstate_paths, entries, added, rewritten, head = self.write_indexes(new_durations=new_durations)
            note_published(self.layout, unihashes, started)
            descriptor = self.write_descriptor(producer, sstate_paths, head)
            if files is not None and {"sstate-cache", "siginfo"} <= set(self.listed):
                self.kept = (self.read_bytes(catalog.NAME), self.read_bytes(HEAD), self.listed)
        finally:
            self.listed, self.fetching = None, {}
        return {
            "objects": sum(1 for o in doc["objects"] if o["path"]),
            "signatures": len(doc["signatures"]),
            "sstate_index": entries,
            "sstate_index_change": "new generation" if rewritten else "%d appended" % added,
            "hashserv": descriptor["hashserv"],
            "nativelsbstrings": descriptor["nativelsbstrings"],
            "discarded": discarded,
            "durations": sum(1 for o in doc["objects"] if o["path"] and (o["recipe"], o["task"], o["unihash"])
                             in (new_durations or {})),
            "covered_durations": self.new_covered_durations(doc, new_durations or {}),
        }

    def kept_listing(self, files):
        """{area: {path: size}} of the sstate-cache and siginfo areas without
        listing them: the last commit's listing (kept by serve's process, which
        commits the uploads), with what receive() stored since and `files`
        (cache path, size) that it does not hold at that size as the storage
        has them (a replica's on the same storage wrote them, or they were
        there before). None, and the commit lists the cache, where nothing
        was kept or `files` is None, or where index.json or the sstate index's
        head.json is no longer as that commit left it: another writer committed
        since (gc, a local publish, another replica). A file put into or
        taken out of the cache by other means shows at the next commit that
        lists it."""
        kept, self.kept = self.kept, None
        received, self.received = self.received, {}
        if kept is None or files is None:
            return None
        if (self.read_bytes(catalog.NAME, again=True), self.read_bytes(HEAD, again=True)) != kept[:2]:
            return None
        listing = kept[2]
        for path, size in received.items():
            area, _, rel = path.partition("/")
            if area in listing:
                listing[area][rel] = size
        unsure = []
        for path, size in files:
            area, _, rel = path.partition("/")
            if area in listing and listing[area].get(rel) != size:
                unsure.append(path)
        for path, size in self.storage.sizes(unsure).items():
            area, _, rel = path.partition("/")
            if size is None:
                listing[area].pop(rel, None)
            else:
                listing[area][rel] = size
        return listing

    def new_covered_durations(self, doc, new):
        """How many of a publish's durations of tasks without an object the cache kept."""
        if not new:
            return 0
        objects = {(o["recipe"], o["task"], o["unihash"]) for o in doc["objects"] if o["path"]}
        kept = durations.entries_of(self.read_json(durations.NAME))
        return sum(1 for k in new if k in kept and k not in objects and kept[k] == new[k])


def same_but_when(old, new):
    """Whether two index.json documents say the same but for when they were generated."""
    def what(doc):
        timed = doc.get("durations")
        return dict(doc, generated=None, durations=dict(timed, generated=None) if isinstance(timed, dict) else timed)
    return what(old) == what(new)
