# SPDX-License-Identifier: MIT
#
# The cache's upload endpoint, beside the read-only mirror in the same http
# server: remote producers add sstate objects, downloads and signature data.
# Off until the cache has a producer token (server/tokens.json); anonymous
# readers keep the mirror exactly as it was (PUT and POST elsewhere: 405).
#
#   POST /upload/v1/missing   {"files": [[path, size], ...]} -> {"missing": [path, ...]}
#                             which of a producer's files the cache lacks
#   PUT  /upload/v1/<path>    one file; X-Equivcache-SHA256: its hex digest;
#                             Content-Length required, at most the size limit
#                             201 stored, 200 already there
#   POST /upload/v1/batch     many files in one request: a 4-byte big-endian length,
#                             that many bytes of JSON [{"path", "size", "sha256"
#                             (, "sig": base64 of its .sig)}, ...], then the files'
#                             bytes one after the other; each stored as a PUT
#                             stores it, then synced once -> {"stored", "present", "stored_bytes"}
#   POST /upload/v1/equivalences  the producer's equivalences, merged by the cache
#                             (equivalences.py) -> {"outhashes", "unihashes", "remapped", "superseded"}
#   POST /upload/v1/commit    {"publish": id, "unihashes": [...], "superseded": [...], "started": time,
#                             "producer": {...}, "durations": [{recipe, task, unihash,
#                             seconds, measured}]}: once per publish, in the cache's lock:
#                             objects no equivalence names dropped, indexes and
#                             durations, gc's ledger, descriptor
#
# Every request needs HTTP Basic authentication with a producer token
# (NAME, SECRET): none or a wrong or revoked one is 401, a reader's 403.
# A path is AREA/RELPATH with AREA sstate-cache, downloads or siginfo and
# RELPATH a name of that area (parse_upload_path); anything else is 400 and
# writes nothing. Pure Python: no bb import.

import base64
import contextlib
import json
import logging
import os
import re
import threading
import time
import urllib.parse

from equivcache import names
from equivcache.reportsend import LIMIT as REPORT_LIMIT, PATH as REPORTS
from equivcache.uploadapi import MANIFEST_LIMIT, PREFIX, SHA256_HEADER
from equivcache.server.store.storage import AREAS, Refused
from equivcache.server.http import equivalences
from equivcache.server.http.mirror import MirrorHandler, MirrorServer
from equivcache.server.store.local import DOWNLOAD_SKIP_DIRS, DOWNLOAD_SKIP_SUFFIXES
from equivcache.server.hashequiv.tokens import REPORTS as REPORT_ROLES
from equivcache.server.http.signed import SIGNATURE_HEADER, SignedUploads

logger = logging.getLogger("equivcache.uploads")

UPLOAD_NICE = 10
# For a load balancer: 200 {"status": "ok", ...} while every part answers, else 503.
HEALTH = "/healthz"
_COMPONENT = re.compile(r"^[A-Za-z0-9_+@%,=~][A-Za-z0-9._+:@%,=~-]{0,254}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def parse_upload_path(path):
    """The cache-relative path ("AREA/RELPATH") an upload may write, or Refused(400)."""
    if not isinstance(path, str) or "\0" in path or "\\" in path or path.startswith("/"):
        raise Refused(400, "%r: not a relative path" % (path,))
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Refused(400, "%s: empty, '.' or '..' components are refused" % path)
    area, rel = parts[0], parts[1:]
    if area not in AREAS or not rel:
        raise Refused(400, "%s: uploads go to %s only" % (path, ", ".join(a + "/" for a in AREAS)))
    bad = [p for p in rel if not _COMPONENT.match(p)]
    if bad:
        raise Refused(400, "%s: %r is not a file or directory name a cache holds" % (path, bad[0]))
    if area == "sstate-cache":
        parsed = names.parse_sstate_name(rel[-1])
        unihash = parsed[2] if parsed else ""
        if not parsed or len(rel) not in (3, 4) or rel[-3:-1] != [unihash[:2], unihash[2:4]]:
            raise Refused(400, "%s: not an sstate object name ([NATIVELSBSTRING/]xx/yy/sstate:...)" % path)
    elif area == "siginfo":
        if not 2 <= len(rel) <= 4 or names.parse_sigdata_name("/".join(rel)) is None:
            raise Refused(400, "%s: not task signature data (MULTIMACH_TARGET_SYS/PN/...sigdata.UNIHASH)" % path)
    elif len(rel) > 4 or rel[0] in DOWNLOAD_SKIP_DIRS or rel[-1].endswith(DOWNLOAD_SKIP_SUFFIXES):
        raise Refused(400, "%s: not a download a mirror serves (fetcher state, VCS clone or too deep)" % path)
    return path


def listed_files(doc, what):
    """The checked (cache path, size) pairs of a request's "files"."""
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
                                              and isinstance(f[1], int) for f in files):
        raise Refused(400, "%s: {\"files\": [[path, size], ...]} expected" % what)
    return [(parse_upload_path(path), size) for path, size in files]


def commit_durations(entries, producer):
    """{(recipe, task, unihash): entry} of a commit's "durations", named after the token's producer."""
    if not isinstance(entries, list):
        raise Refused(400, "commit: \"durations\" must be a list")
    timed = {}
    for e in entries:
        if not (isinstance(e, dict) and all(isinstance(e.get(k), str) and 0 < len(e[k]) <= 256
                                            for k in ("recipe", "task", "unihash", "measured"))
                and isinstance(e.get("seconds"), (int, float)) and 0 <= e["seconds"] < 1e7):
            raise Refused(400, "commit: a \"durations\" entry needs recipe, task, unihash, measured (strings) "
                          "and seconds (a number): %.200s" % json.dumps(e))
        timed[(e["recipe"], e["task"], e["unihash"])] = {"seconds": float(e["seconds"]), "producer": producer,
                                                         "measured": e["measured"]}
    return timed


def background():
    """This connection's thread yields the CPU to the readers' (nice 10 on
    Linux, where each thread has its own): an upload's hashing and writes
    are not on a consumer's path."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < UPLOAD_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, UPLOAD_NICE)


class CacheHTTPServer(MirrorServer):
    """The mirror of a cache, with its upload endpoint: the cache, its
    producer tokens, the size limit of a file, and named(unihashes) -> [bool]:
    which unihashes its hash equivalence database names (for the commit);
    and its dashboard (dashboard.Dashboard, or None), whose history notes
    each publish."""

    def __init__(self, cache, address, tokens, max_upload, named, dashboard=None, reports_need_token=False,
                 require_signatures=False, merge=None):
        self.cache, self.tokens, self.max_upload, self.named = cache, tokens, max_upload, named
        self.merge = merge   # (outhashes, unihashes) -> merge_database()'s counts, through the write endpoint
        self.dashboard, self.reports_need_token = dashboard, reports_need_token
        self.health = None   # () -> (status, document): serve's, once its parts run
        self.worker = None   # handoff.UploadWorker: upload connections go to it
        self.handed = set()   # the connections handed to it, closed here without a shutdown
        self.signed = SignedUploads(cache, tokens) if require_signatures else None
        super().__init__(cache.served_root, address, CacheHandler)


    def shutdown_request(self, request):
        if request in self.handed:   # the upload worker has it: only this process's descriptor goes
            self.handed.discard(request)
            request.close()
            return
        super().shutdown_request(request)


class CacheHandler(MirrorHandler):
    """The mirror, and the upload endpoint when the cache has producer tokens."""

    server_version = "equivcache-cache"
    timeout = 300   # a client silent this long loses its connection (and its upload under way)
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # answer on a kept-alive connection waits for the client's delayed ACK.
    disable_nagle_algorithm = True

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path == HEALTH and self.server.health:
            self.answer(*self.server.health())
            return
        found = self.server.dashboard.get(self.path) if self.server.dashboard else None
        name = urllib.parse.urlsplit(self.path).path.lstrip("/")
        if found is None and name in self.server.cache.proxied:
            # A cache in a bucket: its descriptor, for publish --to (consumers read the bucket).
            data = self.server.cache.read_bytes(name)
            found = (200, "application/json", data) if data is not None else None
        if found is None:
            self.send_file(body=True)
            return
        status, kind, body = found
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        self.upload("PUT")

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path == REPORTS and self.server.dashboard:
            self.receive_report()
        else:
            self.upload("POST")

    def receive_report(self):
        try:
            if self.server.reports_need_token:
                self.authenticate(self.server.tokens, REPORT_ROLES, "build reports")
            length = self.length()
            if length > REPORT_LIMIT:
                raise Refused(413, "a build report of %d bytes: at most %d" % (length, REPORT_LIMIT))
            status, doc = 201, self.server.dashboard.receive(self.rfile.read(length))
        except Refused as e:
            logger.warning("build report refused (%d) from %s: %s", e.status, self.address_string(), e)
            self.close_connection = True
            status, doc = e.status, {"error": str(e)}
        self.answer(status, doc)

    def answer(self, status, doc):
        body = (json.dumps(doc, sort_keys=True) + "\n").encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="equivcache uploads"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.say_closing()
        self.end_headers()
        self.wfile.write(body)

    def upload(self, method):
        path = urllib.parse.urlsplit(self.path).path
        if self.server.worker is not None and path.startswith(PREFIX) and self.server.worker.take(self):
            self.server.handed.add(self.request)
            self.close_connection = True
            return
        background()
        tokens = self.server.tokens
        if path.startswith(PREFIX) and not tokens.active("producer"):
            tokens.refresh()   # the first one may have been added a moment ago, through another replica
        if not path.startswith(PREFIX) or not tokens.active("producer"):
            self.refuse()
            return
        try:
            token = self.authenticate(tokens)
            length = self.length()
            what = urllib.parse.unquote(path[len(PREFIX):])
            if method == "PUT":
                status, doc = self.put(token, what, length)
            elif what == "missing":
                status, doc = 200, self.missing(self.json_body(length))
            elif what == "commit":
                status, doc = 200, self.commit(token, self.json_body(length))
            elif what == "equivalences" and self.server.merge is not None:
                status, doc = 200, self.equivalences(token, self.json_body(length))
            elif what == "batch":
                status, doc = 200, self.batch(token, length)
            else:
                raise Refused(404, "POST %s: no such upload action (missing, batch, equivalences, commit)" % path)
        except Refused as e:
            logger.warning("upload refused (%d) from %s: %s", e.status, self.address_string(), e)
            self.close_connection = True   # the body may be unread
            self.answer(e.status, {"error": str(e)})
            return
        except (ConnectionError, TimeoutError) as e:
            logger.warning("upload from %s broke off: %s", self.address_string(), e)
            self.close_connection = True
            return
        self.answer(status, doc)

    def authenticate(self, tokens, roles=("producer",), what="uploads"):
        """The token the request carries, if its role is one of roles; Refused(401 or 403) else."""
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise Refused(401, "%s need a %s token (HTTP Basic: NAME and SECRET)" % (what, " or ".join(roles)))
        try:
            name, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Refused(401, "malformed Authorization header")
        token, why = tokens.verify(name, secret)
        if token is None:
            raise Refused(401, "token %r is %s" % (name, why))
        if token["role"] not in roles:
            raise Refused(403, "token %r is a %s's: %s need a %s token" % (name, token["role"], what,
                                                                          " or ".join(roles)))
        return token

    def length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Refused(411, "send Content-Length, not a chunked body")
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            raise Refused(411, "Content-Length required")
        if length < 0:
            raise Refused(400, "Content-Length %d" % length)
        return length

    def json_body(self, length):
        if length > MANIFEST_LIMIT:
            raise Refused(413, "a request body of %d bytes is over the %d bytes allowed" % (length, MANIFEST_LIMIT))
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("the body ended after %d of %d bytes" % (len(body), length))
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise Refused(400, "the body is not JSON: %s" % e)
        if not isinstance(doc, dict):
            raise Refused(400, "the body is not a JSON object")
        return doc

    def missing(self, doc):
        files = listed_files(doc, "missing")
        missing = self.server.cache.missing(files)
        return {"missing": self.server.signed.missing(files, missing) if self.server.signed else missing,
                "equivalences": self.server.merge is not None}   # what publish --to sends them to

    def put(self, token, what, length):
        path = parse_upload_path(what)
        if length > self.server.max_upload:
            raise Refused(413, "%s: %d bytes is over the upload limit of %d bytes (serve --max-upload-size)"
                          % (path, length, self.server.max_upload))
        sha256 = self.headers.get(SHA256_HEADER, "").lower()
        if not _HEX64.match(sha256):
            raise Refused(400, "%s: header %s with the body's SHA-256 (64 hex digits) required" % (path, SHA256_HEADER))
        if self.server.signed:
            had = self.server.signed.receive(token, path, self.rfile, length, sha256,
                                             self.headers.get(SIGNATURE_HEADER))
        else:
            had = self.server.cache.receive(path, self.rfile, length, sha256)
        logger.debug("upload by %s: %s (%d bytes)%s", token["name"], path, length, " already there" if had else "")
        return (200 if had else 201), {"path": path, "stored": not had}

    def batch_manifest(self, length):
        """The checked manifest of a batch: [(path, size, sha256, signature header or None)]."""
        head = self.rfile.read(4)
        size = int.from_bytes(head, "big") if len(head) == 4 else -1
        if not 0 < size <= min(MANIFEST_LIMIT, length - 4):
            raise Refused(400, "batch: a 4-byte manifest length, then the manifest, expected")
        try:
            entries = json.loads(self.rfile.read(size))
        except ValueError as e:
            raise Refused(400, "batch: the manifest is not JSON: %s" % e)
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("size"), int)
                and 0 <= e["size"] <= self.server.max_upload and isinstance(e.get("sha256"), str)
                and _HEX64.match(e["sha256"]) and isinstance(e.get("sig", ""), str) for e in entries):
            raise Refused(400, "batch: a manifest of {\"path\", \"size\" (at most the upload limit), \"sha256\"} "
                          "expected")
        if 4 + size + sum(e["size"] for e in entries) != length:
            raise Refused(400, "batch: Content-Length %d is not the manifest's and its files' %d bytes"
                          % (length, 4 + size + sum(e["size"] for e in entries)))
        return [(parse_upload_path(e["path"]), e["size"], e["sha256"], e.get("sig")) for e in entries]

    def batch(self, token, length):
        """Many files in one request (see above): each written as a PUT writes it, all synced once."""
        manifest = self.batch_manifest(length)
        room = self.server.cache.storage.free_space()
        if sum(e[1] for e in manifest) > room:
            raise Refused(507, "a batch of %d bytes does not fit on the cache's disk" % sum(e[1] for e in manifest))
        present, size_present = 0, 0
        try:
            for path, size, sha256, signature in manifest:
                if self.server.signed:
                    had = self.server.signed.receive(token, path, self.rfile, size, sha256, signature, sync=False)
                else:
                    had = self.server.cache.receive(path, self.rfile, size, sha256, sync=False, room=room)
                present += bool(had)
                size_present += size if had else 0
        finally:   # what was stored before a refusal stays, on stable storage
            self.server.cache.storage.sync()
        logger.debug("upload by %s: a batch of %d files, %d already there", token["name"], len(manifest), present)
        return {"stored": len(manifest) - present, "present": present,
                "stored_bytes": sum(e[1] for e in manifest) - size_present}

    def equivalences(self, token, doc):
        outhashes, unihashes = equivalences.parse(doc)
        try:
            counts = self.server.merge(outhashes, unihashes)
        except Exception as e:   # hashserv's client raises what its transport raises
            raise Refused(503, "the cache's hash server took no equivalences: %s" % (str(e) or type(e).__name__))
        logger.info("equivalences of %s merged: %d output hashes, %d unihashes, %d taken over", token["name"],
                    counts["outhashes"], counts["unihashes"], counts["remapped"])
        return equivalences.answer(counts)

    def commit(self, token, doc):
        unihashes, superseded = doc.get("unihashes", []), doc.get("superseded", [])
        for key, value in (("unihashes", unihashes), ("superseded", superseded)):
            if not isinstance(value, list) or not all(isinstance(u, str) and len(u) <= 128 for u in value):
                raise Refused(400, "commit: \"%s\" must be a list of strings" % key)
        producer = doc.get("producer")
        if producer is not None and not isinstance(producer, dict):
            raise Refused(400, "commit: \"producer\" must be an object")
        started = doc.get("started")
        started = float(started) if isinstance(started, (int, float)) else time.time()
        timed = commit_durations(doc.get("durations", []), token["name"])
        files = listed_files(doc, "commit") if "files" in doc else None   # an older publish names none
        with self.server.cache.lock():
            summary = self.server.cache.commit(set(unihashes), min(started, time.time()), producer,
                                               set(superseded), self.server.named, timed, files)
        logger.info("publish by %s committed: %d objects, sstate index %d files (%s)", token["name"],
                    summary["objects"], summary["sstate_index"], summary["sstate_index_change"])
        sent = doc.get("sent") if isinstance(doc.get("sent"), dict) else {}
        publish_id = doc.get("publish") if isinstance(doc.get("publish"), str) and len(doc["publish"]) <= 64 else None
        if self.server.dashboard:
            self.server.dashboard.history.note_publish(
                token["name"], summary["objects"], *(int(sent.get(k, 0)) if isinstance(sent.get(k), int) else 0
                                                     for k in ("files", "bytes")), publish_id=publish_id)
        return summary
