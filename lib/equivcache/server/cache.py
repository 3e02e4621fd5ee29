# SPDX-License-Identifier: MIT
#
# One cache, one object: what local publish, remote uploads, gc and check
# do to a cache, over a storage that holds its files. The storage here is a
# local directory (LocalStorage); an object store is a second storage with
# the same methods, not a second copy of publish.
#
#   Cache.lock()        publish, upload commits and gc take turns
#   Cache.missing()     which of a producer's files the cache lacks
#   Cache.add_files()   a local producer's files, copied atomically
#   Cache.receive()     one uploaded file: verified, then renamed into place
#   Cache.commit()      once per publish, in the lock: index.json, durations.json,
#                       the sstate index, gc's ledger, the descriptor
#
# No bb import.

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time

from equivcache import descriptor as desc
from equivcache import catalog, durations, names, pathkeys
from equivcache.cli import Progress
from equivcache.files import json_bytes, write_atomic
from equivcache.server.layout import Layout, write_descriptor

# The areas of a cache a producer adds files to.
AREAS = ("sstate-cache", "downloads", "siginfo")
CHUNK = 1 << 20


def cache_path(area, rel):
    """The path relative to the cache (as storages and uploads name files) of rel in area."""
    return area + "/" + rel.replace(os.sep, "/")


class Refused(Exception):
    """An upload the cache does not take: status is the http answer."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class LocalStorage:
    """The files of a cache directory on a local file system. Files appear
    under their published name only whole: written under a hidden
    temporary name in the same directory, then renamed."""

    def __init__(self, root):
        self.root = os.path.realpath(root)

    def path(self, rel):
        return os.path.join(self.root, *rel.split("/"))

    def size(self, rel):
        """The size of a published file, None if absent."""
        try:
            return os.path.getsize(self.path(rel))
        except OSError:
            return None

    def touch(self, rel, when):
        os.utime(self.path(rel), (when, when))

    def _parent(self, rel):
        """The directory of rel, created, refused if a symbolic link leads anywhere."""
        area = os.path.join(self.root, rel.split("/", 1)[0])
        directory = area
        for part in rel.split("/")[1:-1]:
            directory = os.path.join(directory, part)
            if os.path.islink(directory):
                raise Refused(400, "%s: %s is a symbolic link" % (rel, os.path.relpath(directory, self.root)))
        if os.path.islink(area):
            raise Refused(400, "%s: %s is a symbolic link" % (rel, os.path.basename(area)))
        os.makedirs(directory, exist_ok=True)
        if not os.path.realpath(directory).startswith(os.path.realpath(area) + os.sep) and directory != area:
            raise Refused(400, "%s leads outside %s/" % (rel, os.path.basename(area)))
        return directory

    def _temporary(self, directory):
        return os.path.join(directory, ".upload-%s.tmp" % secrets.token_hex(8))

    def put_file(self, rel, source, when):
        """Copy a local file to rel (replacing what is there)."""
        tmp = self._temporary(self._parent(rel))
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
            os.utime(tmp, (when, when))
            os.replace(tmp, self.path(rel))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_stream(self, rel, stream, length, sha256, when):
        """Write exactly `length` bytes of `stream` to rel if their SHA-256 is
        `sha256`: to a temporary name, checked, synced, then linked under
        rel. A file already published under rel is kept (True if it was).
        A short body, a wrong hash or a full disk leave nothing behind."""
        directory = self._parent(rel)
        tmp = self._temporary(directory)
        digest = hashlib.sha256()
        try:
            try:
                with open(tmp, "wb") as f:
                    left = length
                    while left:
                        block = stream.read(min(CHUNK, left))
                        if not block:
                            raise Refused(400, "%s: the body ended after %d of %d bytes"
                                          % (rel, length - left, length))
                        digest.update(block)
                        f.write(block)
                        left -= len(block)
                    f.flush()
                    if digest.hexdigest() != sha256:
                        raise Refused(422, "%s: SHA-256 %s, not the %s announced"
                                      % (rel, digest.hexdigest(), sha256))
                    os.fsync(f.fileno())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise Refused(507, "%s: no space left on the cache's disk" % rel)
                raise
            os.chmod(tmp, 0o644)
            os.utime(tmp, (when, when))
            try:
                os.link(tmp, self.path(rel))   # never replaces a published file
            except FileExistsError:
                return True
            with contextlib.suppress(OSError):
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def remove(self, rel):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))

    def free_space(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


class Cache:
    """A cache: its layout, its storage, its lock, its indexes, its ledger, its descriptor."""

    def __init__(self, root, storage=None):
        self.layout = Layout(root)
        self.root = self.layout.root
        self.storage = storage or LocalStorage(self.root)

    @property
    def served_root(self):
        """The directory serve's http mirror serves."""
        return self.root

    @contextlib.contextmanager
    def lock(self, out=None):
        """publish, upload commits and gc, one at a time (server/publish.lock;
        released if the holder dies)."""
        with open(self.layout.publish_lock, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if out is not None:
                    out.write("waiting for the publish or gc under way in %s to finish\n" % self.root)
                    out.flush()
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def listing(self, area):
        """{path relative to area: size} of the files the cache holds there."""
        top = os.path.join(self.root, area)
        return {rel: os.path.getsize(os.path.join(top, rel)) for rel in pathkeys.listed_files(top)}

    def read_bytes(self, name):
        """A file at the cache's top (index.json, sstate-index/head.json...), None if absent."""
        try:
            with open(os.path.join(self.root, *name.split("/")), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put_bytes(self, name, data):
        """Replace a file at the cache's top, atomically."""
        write_atomic(os.path.join(self.root, *name.split("/")), data)

    def read_json(self, name):
        """A JSON file at the cache's top (index.json, equivcache.json), None if absent or not JSON."""
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
        return [rel for rel, size in files if self.storage.size(rel) != size]

    def add_files(self, area, files, source, what, now=None):
        """Copy (path relative to source, size) files the cache lacks into
        area. Every file published, copied or already there, gets the time of
        now (gc's "published" and "used"). Returns (copied, bytes, present)."""
        copied = size = present = 0
        now = time.time() if now is None else now
        progress = Progress(what, len(files))
        for rel, length in files:
            name = cache_path(area, rel)
            if self.storage.size(name) == length:
                self.storage.touch(name, now)
                present += 1
            else:
                self.storage.put_file(name, os.path.join(source, rel), now)
                copied += 1
                size += length
            progress.step()
        progress.close()
        return copied, size, present

    def receive(self, rel, stream, length, sha256, now=None):
        """One uploaded file (rel checked by the caller): True if the cache had it already."""
        if length > self.storage.free_space():
            raise Refused(507, "%s: %d bytes do not fit on the cache's disk" % (rel, length))
        return self.storage.put_stream(rel, stream, length, sha256, time.time() if now is None else now)

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
                removed += 1
        return removed

    def write_indexes(self, exclude_sstate=(), exclude_signatures=(), after_index=None, new_durations=None):
        """index.json, durations.json (with new_durations, {(recipe, task,
        unihash): entry}, it lacked), then the sstate index, of what the
        cache holds (less what gc is about to remove). Returns (index
        document, sstate index entries, appended, rewritten)."""
        doc, sstate_paths = self.build_catalog(exclude_sstate, exclude_signatures)
        self.put_bytes(catalog.NAME, json_bytes(doc))
        present = {(o["recipe"], o["task"], o["unihash"]) for o in doc["objects"] if o["path"]}
        self.put_bytes(durations.NAME, json_bytes(durations.document(durations.merged(
            durations.entries_of(self.read_json(durations.NAME)), new_durations or {}, present))))
        if after_index is not None:
            after_index()
        return (doc,) + tuple(self.update_pathkeys(sstate_paths, exclude_sstate))

    def build_catalog(self, exclude_sstate, exclude_signatures):
        """(index.json's document, the paths of sstate-cache/'s files, or None to list them again)."""
        return catalog.build(self.layout.sstate, siginfo_dir=self.layout.siginfo, exclude=exclude_sstate,
                             exclude_signatures=exclude_signatures), None

    def update_pathkeys(self, sstate_paths, exclude_sstate):
        """pathkeys.update() of sstate-index/ (appended in place)."""
        return pathkeys.update(self.layout.sstate, self.layout.sstate_index, exclude=exclude_sstate)

    def write_descriptor(self, producer=None):
        return write_descriptor(self.layout, producer=producer)

    def scan(self):
        """gc's groups of the cache's files (gc.scan)."""
        from equivcache.server.gc import scan
        return scan(self.layout)

    def delete_groups(self, evicted):
        """gc's removal of the evicted groups' files (gc.delete)."""
        from equivcache.server.gc import delete
        delete(self.layout, evicted)

    def commit(self, unihashes, started, producer=None, superseded=(), named=None, new_durations=None):
        """What a publish ends with, in the lock: the objects no equivalence
        names dropped (discard_superseded), the indexes and durations, gc's
        ledger (the unihashes it brought, and when it started), the descriptor."""
        from equivcache.server.gc import note_published
        discarded = self.discard_superseded(superseded, named) if named else 0
        doc, entries, added, rewritten = self.write_indexes(new_durations=new_durations)
        note_published(self.layout, unihashes, started)
        descriptor = self.write_descriptor(producer)
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
        }


def commit_line(summary):
    """publish's last line, local or remote."""
    dropped = ("sstate: %d files dropped: their outputs were in the cache under another unihash\n"
               % summary["discarded"]) if summary.get("discarded") else ""
    timed = "durations: %d objects' tasks newly timed\n" % summary["durations"] if summary.get("durations") else ""
    return dropped + timed + "index: %d objects, %d task signatures; sstate index: %d files (%s); descriptor: hashserv %s, " \
        "nativelsbstrings %s\n" % (summary["objects"], summary["signatures"], summary["sstate_index"],
                                   summary["sstate_index_change"], ", ".join(summary["hashserv"]),
                                   " ".join(summary["nativelsbstrings"]) or "none")


def producer_of(found):
    """The descriptor's "producer" from newest_build_configuration()'s answer, or None."""
    if not found:
        return None
    values, layers, _ = found
    producer = {k: values[k] for k in desc.PRODUCER_KEYS if k in values}
    producer["layers"] = layers
    return producer
