# SPDX-License-Identifier: MIT
#
# The storage protocol: the verbs a cache (cache.py) asks of whatever holds
# its published files. A directory (local.py) and an S3 bucket (s3.py)
# implement it; the cache never asks which one it has. Paths are relative to
# the cache's top, "/"-separated ("sstate-cache/ab/cd/sstate:...").
#
# Every write is atomic for readers: a file appears under its name whole or
# not at all, and a replaced file is the old or the new one, never a part.
# No bb import.

import abc
import hashlib
import os
from typing import NamedTuple

from equivcache import catalog, descriptor as desc, durations, pathkeys

# The areas of a cache a producer adds files to.
AREAS = ("sstate-cache", "downloads", "siginfo")
# What a cache publishes (the http mirror serves nothing else of a cache directory).
# keys/: the public keys of the producers a signed cache trusts (NAME.asc).
KEYS = "keys"
PUBLIC = (desc.NAME, catalog.NAME, durations.NAME) + AREAS + (pathkeys.DIRECTORY, KEYS)
CHUNK = 1 << 20


def cache_path(area, rel):
    """The path relative to the cache (as storages and uploads name files) of rel in area."""
    return area + "/" + rel.replace(os.sep, "/")


class Refused(Exception):
    """An upload the cache does not take: status is the http answer."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Stored(NamedTuple):
    """A published file: its path relative to its area, its size, when it
    was last used (read or published) and last written (seconds since the epoch)."""
    rel: str
    size: int
    used: float
    written: float


def copy_verified(rel, stream, length, sha256, out):
    """Copy exactly `length` bytes of `stream` to the file object `out` and
    check that their SHA-256 is `sha256`; Refused if the body is short (400)
    or the hash differs (422). What put_stream() of every storage does
    before anything takes a published name."""
    digest = hashlib.sha256()
    left = length
    while left:
        block = stream.read(min(CHUNK, left))
        if not block:
            raise Refused(400, "%s: the body ended after %d of %d bytes" % (rel, length - left, length))
        digest.update(block)
        out.write(block)
        left -= len(block)
    out.flush()
    if digest.hexdigest() != sha256:
        raise Refused(422, "%s: SHA-256 %s, not the %s announced" % (rel, digest.hexdigest(), sha256))


class Storage(abc.ABC):
    """What holds a cache's published files (see above)."""

    # How many files put_file() may write at once to good effect.
    uploads = 1
    # Whether sizes() lists whole areas (a bucket: no request per file):
    # then a publish keeps what it listed for its commit (Cache.add_files).
    lists = False
    # The local directory holding the files, which serve's http mirror
    # serves; None where consumers read the storage itself (a bucket).
    local_root = None

    @abc.abstractmethod
    def sizes(self, rels):
        """{rel: size, or None if absent} of the published files rels."""

    @abc.abstractmethod
    def files(self, area):
        """[Stored] of every published file under area/, in path order."""

    @abc.abstractmethod
    def get_bytes(self, rel):
        """The content of rel, None if absent."""

    @abc.abstractmethod
    def put_bytes(self, rel, data):
        """Replace rel with data (a small file: an index, a descriptor)."""

    @abc.abstractmethod
    def put_file(self, rel, source, when):
        """Copy the local file source to rel, replacing what is there; `when` is its publish time."""

    @abc.abstractmethod
    def put_stream(self, rel, stream, length, sha256, when, check=None, replace=False, sync=True):
        """Exactly `length` bytes of `stream` to rel if their SHA-256 is
        `sha256` (copy_verified()) and check(file open on them) raises no
        Refused; a file already published under rel is kept (replaced if
        replace, or if it has another size: what a crash left), True if it
        was there. A short body, a wrong hash, a failed check or a full disk
        leave nothing behind (Refused). Without sync, the file is on stable
        storage only after the next sync()."""

    def sync(self):
        """What put_stream(sync=False) wrote, on stable storage (nothing to do where every write is)."""

    @abc.abstractmethod
    def append(self, rel, content, kept):
        """Make rel hold exactly `content`, whose first `kept` bytes it holds
        already (and maybe more: an interrupted append's, overwritten): a
        reader's copy of its start stays valid."""

    @abc.abstractmethod
    def remove(self, rel):
        """Remove rel (absent already is fine)."""

    def touch(self, rel, when):
        """Mark rel used at `when`, where the storage keeps such a time (a directory's atime and mtime)."""

    def free_space(self):
        """Bytes an upload may still take, as far as the storage can tell."""
        return float("inf")
