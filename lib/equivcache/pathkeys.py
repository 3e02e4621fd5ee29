# SPDX-License-Identifier: MIT
#
# The path keys of sstate-index/ (the "sstate index"): which files a
# published sstate-cache/ holds, as 8-byte keys of their paths, in a form a
# build can fetch in one or two requests whatever the size of the cache and
# bring up to date with a byte range (not the catalog, catalog.py). equivcache-server publish writes it,
# the mirror availability check (lib/equivcache/sstatecheck.py) reads it.
# Pure Python: no bb import.
#
#   <cache>/sstate-index/head.json           small, rewritten atomically at each
#                                            publish: format, version, directory,
#                                            generation, journal, entries
#   <cache>/sstate-index/journal-<gen>.bin   append-only: one 8-byte key per
#                                            file of sstate-cache/, in publish order
#
# A key is the first 8 bytes of the SHA-256 of the file's path relative to
# sstate-cache/ (as sstate_checkhashes names it: "universal/ab/cd/sstate:...",
# "<NATIVELSBSTRING>/...", ".siginfo" included). 1,000,000 files make an
# 8 MB journal; the chance that one of a build's few thousand names collides
# with another name's key is about 1e-10, and a collision costs what a lost
# object costs: one failed setscene download and that task run.
#
# A publish that only adds files appends their keys to the journal, then
# rewrites head.json with the new count: a reader never sees a count its
# journal does not yet hold, and a client that has the first N keys fetches
# only "Range: bytes=8N-". A publish that finds files gone (gc, or removed by
# hand) starts a new generation: a new journal, then head.json; the previous
# journal is kept for readers that are half-way through it.

import hashlib
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request

from equivcache import files
from equivcache.probe import describe_error

DIRECTORY = "sstate-index"
HEAD = "head.json"
FORMAT = "equivcache-sstate-index"
VERSION = 1
KEY_SIZE = 8
HEAD_LIMIT = 64 << 10
_GENERATION = re.compile(r"^[0-9a-f]{16}$")


def key(path):
    """The key of a path relative to sstate-cache/, as stored in the journal."""
    return hashlib.sha256(path.encode("utf-8")).digest()[:KEY_SIZE]


def key_int(path):
    """key(path) as the integer memoryview(journal).cast("Q") yields for it."""
    return int.from_bytes(key(path), sys.byteorder)


def keys_of(journal):
    """The keys of journal bytes, as integers (a view: no copy)."""
    return memoryview(journal).cast("Q")


def listed_files(sstate_dir):
    """Paths, relative to sstate_dir, of the files sstate_dir holds (the
    temporary files of an interrupted copy excluded)."""
    for rel, _ in listed_stats(sstate_dir):
        yield rel


def listed_stats(sstate_dir):
    """listed_files() with each file's os.lstat() result."""
    for rel, st in files.regular_files(sstate_dir):
        name = rel.rpartition("/")[2]
        if not (name.startswith(".") or name.endswith((".tmp", ".lock"))):
            yield rel, st


class Unavailable(Exception):
    """No usable index. quiet: the mirror simply has none (no warning)."""

    def __init__(self, reason, quiet=False):
        super().__init__(reason)
        self.quiet = quiet


def check_head(head, directory=None):
    """Validate a head.json document; return it. Raise Unavailable."""
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise Unavailable("not an equivcache sstate index")
    version = head.get("version")
    if not isinstance(version, int) or version < 1:
        raise Unavailable("bad version %r" % (version,))
    if version > VERSION:
        raise Unavailable("format version %d, newer than this layer reads (%d): update meta-equivcache"
                          % (version, VERSION))
    generation, entries = head.get("generation"), head.get("entries")
    if not isinstance(generation, str) or not _GENERATION.match(generation):
        raise Unavailable("bad generation %r" % (generation,))
    if not isinstance(entries, int) or entries < 0:
        raise Unavailable("bad entry count %r" % (entries,))
    if head.get("journal") != journal_name(generation):
        raise Unavailable("bad journal name %r" % (head.get("journal"),))
    if directory is not None and head.get("directory") != directory:
        raise Unavailable("it describes %s/, not %s/" % (head.get("directory"), directory))
    return head


def journal_name(generation):
    return "journal-%s.bin" % generation


# ---- writing (equivcache-server publish, gc: server/store/cache.py) ----

def read_local(index_dir):
    """(head, journal bytes) of the index in index_dir, or (None, b"") if it
    has none or an unusable one."""
    def get(name):
        with open(os.path.join(index_dir, name), "rb") as f:
            return f.read()
    return read_with(get)


def read_with(get):
    """read_local() of an index whose files get(name) returns (bytes; OSError
    or None if absent): a directory's, or an object store's."""
    try:
        raw = get(HEAD)
        head = check_head(json.loads(raw)) if raw is not None else None
        journal = (get(head["journal"]) or b"")[:head["entries"] * KEY_SIZE] if head else b""
    except (OSError, ValueError, Unavailable):
        return None, b""
    if head is None or len(journal) != head["entries"] * KEY_SIZE:
        return None, b""
    return head, journal


def update(storage, paths, directory="sstate-cache", exclude=(), get=None, key_of=key):
    """Bring the index in storage's sstate-index/ up to date with paths,
    those of directory's files, leaving out the paths in exclude (gc's,
    about to be removed). storage: the cache's (server/store/storage.py:
    get_bytes, put_bytes, append, files, remove). Returns (entries, added,
    new_generation, head.json's document). Callers serialise (publish's lock).
    get(name): the index's files as read_with() reads them (default: from storage);
    key_of(path): key(path), or what a caller kept of it."""
    current = {key_of(p) for p in paths if p not in exclude}
    head, journal = read_with(get or (lambda name: storage.get_bytes(DIRECTORY + "/" + name)))
    known = {journal[i:i + KEY_SIZE] for i in range(0, len(journal), KEY_SIZE)}
    if head is not None and known <= current and head.get("directory") == directory:
        added = sorted(current - known)
        if added:
            # Past what head.json counts: an interrupted append is overwritten.
            storage.append(DIRECTORY + "/" + head["journal"], journal + b"".join(added), len(journal))
            head = dict(head, entries=head["entries"] + len(added))
            storage.put_bytes(DIRECTORY + "/" + HEAD, files.json_bytes(head))
        return head["entries"], len(added), False, head
    generation = secrets.token_hex(8)
    ordered = sorted(current)
    storage.put_bytes(DIRECTORY + "/" + journal_name(generation), b"".join(ordered))
    previous = head["journal"] if head else None
    head = {"format": FORMAT, "version": VERSION, "directory": directory, "generation": generation,
            "journal": journal_name(generation), "entries": len(ordered)}
    storage.put_bytes(DIRECTORY + "/" + HEAD, files.json_bytes(head))
    for stored in storage.files(DIRECTORY):
        if stored.rel.startswith("journal-") and stored.rel not in (journal_name(generation), previous):
            storage.remove(DIRECTORY + "/" + stored.rel)
    return len(ordered), len(current - known), True, head


# ---- reading (the build's mirror availability check) ----

def index_url(mirror_root):
    """Where the index of a mirror whose root is .../sstate-cache lives."""
    return mirror_root.rstrip("/").rsplit("/", 1)[0] + "/" + DIRECTORY + "/"


class Fetched:
    """What load() got: the journal's keys, the URL of the index, and the
    number of requests it made and bytes it received."""

    def __init__(self, url, head, journal, requests, received):
        self.url, self.head, self.journal = url, head, journal
        self.requests, self.received = requests, received

    @property
    def keys(self):
        return keys_of(self.journal)


def _get(url, timeout, headers=None, limit=None):
    """(status, headers, body) of a GET; raise Unavailable."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read() if limit is None else answer.read(limit + 1)
            status, answer_headers = answer.status, answer.headers
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise Unavailable("HTTP 404", quiet=True) from e
        if e.code == 416:
            return 416, e.headers, b""
        raise Unavailable("HTTP %d %s" % (e.code, e.reason)) from e
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, Exception) else OSError(str(e.reason))
        raise Unavailable(describe_error(reason)) from e
    except (OSError, ValueError) as e:
        raise Unavailable(describe_error(e)) from e
    if limit is not None and len(body) > limit:
        raise Unavailable("%s is larger than %d bytes" % (url, limit))
    return status, answer_headers, body


def load(mirror_root, cache_dir, timeout, known_head=None):
    """The index beside an http(s):// or file:// mirror root, brought up to
    date in cache_dir (unused for file://). known_head: its head.json as the
    cache's descriptor, fetched a moment ago, carries it (no request for it;
    if its journal is gone meanwhile, head.json is asked after all). Raises
    Unavailable."""
    url = index_url(mirror_root)
    directory = mirror_root.rstrip("/").rsplit("/", 1)[1]
    if urllib.parse.urlsplit(url).scheme == "file":
        local = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if not os.path.exists(os.path.join(local, HEAD)):
            raise Unavailable("no %s" % os.path.join(local, HEAD), quiet=True)
        head, journal = read_local(local)
        if head is None:
            raise Unavailable("%s is unreadable or inconsistent" % local)
        check_head(head, directory)
        return Fetched(url, head, journal, 0, 0)

    if known_head is not None:
        try:
            return _load_journal(url, cache_dir, timeout, check_head(known_head, directory), 0, 0)
        except Unavailable:
            pass
    status, _, body = _get(url + HEAD, timeout, limit=HEAD_LIMIT)
    try:
        head = check_head(json.loads(body), directory)
    except ValueError as e:
        raise Unavailable("%s: not JSON (%s)" % (url + HEAD, e))
    return _load_journal(url, cache_dir, timeout, head, 1, len(body))


def _load_journal(url, cache_dir, timeout, head, requests, received):
    """load()'s journal for a head: the cached copy, extended by a range request if it is short."""
    wanted = head["entries"] * KEY_SIZE
    cached_head, cached = read_cache(cache_dir)
    if cached_head is not None and cached_head["generation"] == head["generation"] and len(cached) >= wanted:
        return Fetched(url, head, cached[:wanted], requests, received)
    start = len(cached) if cached_head is not None and cached_head["generation"] == head["generation"] else 0
    journal = cached[:start]
    if wanted > start:
        status, headers, body = _get(url + head["journal"], timeout,
                                     headers={"Range": "bytes=%d-%d" % (start, wanted - 1)})
        requests, received = requests + 1, received + len(body)
        if status == 206 and _range_start(headers.get("Content-Range")) == start:
            journal += body
        elif status == 200:
            journal = body
        else:
            raise Unavailable("%s: unexpected answer %d to a range request" % (url + head["journal"], status))
        if len(journal) < wanted:
            raise Unavailable("%s holds %d keys, %s counts %d" % (url + head["journal"], len(journal) // KEY_SIZE,
                                                                 HEAD, head["entries"]))
        journal = journal[:wanted]
    write_cache(cache_dir, head, journal)
    return Fetched(url, head, journal, requests, received)


def _range_start(content_range):
    match = re.match(r"bytes (\d+)-\d+/", content_range or "")
    return int(match.group(1)) if match else None


def read_cache(cache_dir):
    try:
        with open(os.path.join(cache_dir, HEAD)) as f:
            head = check_head(json.load(f))
        with open(os.path.join(cache_dir, "journal.bin"), "rb") as f:
            journal = f.read()
    except (OSError, ValueError, Unavailable):
        return None, b""
    return head, journal[:len(journal) - len(journal) % KEY_SIZE]


def write_cache(cache_dir, head, journal):
    """Keep the copy for the next build; a build that cannot write it still works."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        files.write_atomic(os.path.join(cache_dir, "journal.bin"), journal)
        files.write_json(os.path.join(cache_dir, HEAD), head)
    except OSError:
        pass
