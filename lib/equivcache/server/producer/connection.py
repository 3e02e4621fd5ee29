# SPDX-License-Identifier: MIT
#
# One connection of a producer to a cache's upload endpoint (/upload/v1/,
# uploadapi.py), as publish --to (upload.py) opens them: a JSON request, a
# batch of files (a manifest with each file's size and SHA-256, then the
# files), a PUT of one file, the cache's descriptor; every request tried
# again for a while when a connection is lost or a proxy answers that no
# replica is there.

import base64
import hashlib
import http.client
import json
import os
import socket
import time
import urllib.parse

from equivcache import descriptor as desc
from equivcache.cli import Failure, UsageError
from equivcache.uploadapi import PREFIX, SHA256_HEADER, SIGNATURE_HEADER, basic_auth

TIMEOUT = 60
BLOCK = 1 << 20
# Of a batch's files smaller than BLOCK, this many bytes are read once, held
# from hashing to sending (larger files are read twice, the second time as sent).
HELD_BYTES = 16 << 20
# A request is tried again when the connection is lost or a proxy answers
# RETRIED, after each of these pauses in turn (15.5 s in all: longer than a
# proxy leaves a failed replica out, REPLICA_FAIL_TIMEOUT).
RETRY_PAUSES = (0.5, 1, 2, 4, 8)
RETRIED = (502, 503, 504)


def _no_delay(cls):
    """An http.client connection class with TCP_NODELAY: a PUT's headers and
    body go out in separate writes, which Nagle's algorithm would hold until
    the server's delayed ACK (40 ms an upload)."""
    class Connection(cls):
        def connect(self):
            super().connect()
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Connection


def sha256_of(f):
    """The SHA-256 of what is left of file object f, hex (hashlib.file_digest() is Python 3.11's)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


class NoSuchAction(Exception):
    """A server older than an upload action."""


class Upload:
    """An http(s) connection to a cache's upload endpoint, as one producer."""

    def __init__(self, url, name, secret, timeout=TIMEOUT):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError("--to %s: not an http:// or https:// URL of a cache" % url)
        self.url = url.rstrip("/")
        self.base = parts.path.rstrip("/")
        self.name = name
        cls = _no_delay(http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection)
        self.connection = cls(parts.hostname, parts.port, timeout=timeout, blocksize=BLOCK)
        self.auth = basic_auth(name, secret)
        self.batches = True   # until the server says it has none

    def request(self, method, path, body=None, headers=None):
        """(status, JSON answer) of one request. A connection lost, or a proxy's
        502, 503 or 504 (a replica behind it gone), is tried again after each
        of RETRY_PAUSES: every request of the protocol can be repeated."""
        headers = dict(headers or {}, Authorization=self.auth)
        for pause in RETRY_PAUSES + (None,):
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                self.connection.request(method, self.base + path, body=body() if callable(body) else body,
                                        headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException) as e:
                self.connection.close()
                if pause is None:
                    raise Failure("%s: %s %s: %s" % (self.url, method, path, e))
                time.sleep(pause)
                continue
            except OSError as e:
                self.connection.close()
                raise Failure("%s: cannot reach the cache: %s" % (self.url, e.strerror or e))
            if response.status not in RETRIED or pause is None:
                break
            self.connection.close()
            time.sleep(pause)
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {}
        if response.status in (401, 403):
            raise Failure("%s refused token %s (%d): %s" % (self.url, self.name, response.status,
                                                           doc.get("error", "")))
        if response.status == 405:
            raise Failure("%s takes no uploads (405): the cache has no producer token yet, or is an older "
                          "server (equivcache-server token add NAME CACHE_DIR)" % self.url)
        if response.status == 404 and path.endswith(PREFIX + "batch"):
            raise NoSuchAction(path)
        if response.status >= 300:
            raise Failure("%s: %s %s: %d %s" % (self.url, method, path, response.status,
                                                doc.get("error", response.reason)))
        return response.status, doc

    def batch(self, items):
        """Upload [(cache path, local path, size, signature or None)] in one
        request (POST /upload/v1/batch): (files stored, their bytes), or None
        from a server without batches (then each file is PUT)."""
        manifest, held, room = [], {}, HELD_BYTES
        for rel, path, size, signature in items:
            with open(path, "rb") as f:
                if size < BLOCK and size <= room:   # read once: what is sent is what was hashed
                    held[path] = f.read()
                    room -= len(held[path])
                    digest = hashlib.sha256(held[path]).hexdigest()
                else:
                    digest = sha256_of(f)
            entry = {"path": rel, "size": size, "sha256": digest}
            if signature is not None:
                entry["sig"] = base64.b64encode(signature).decode("ascii")
            manifest.append(entry)
        head = json.dumps(manifest).encode()
        head = len(head).to_bytes(4, "big") + head

        def body():
            """The manifest and the files, small ones joined into writes of about BLOCK."""
            pending, size = [head], len(head)
            for _, path, _, _ in items:
                if path in held:
                    pending.append(held[path])
                    size += len(held[path])
                    if size < BLOCK:
                        continue
                if pending:
                    yield b"".join(pending)
                pending, size = [], 0
                if path not in held:
                    with open(path, "rb") as f:
                        yield from iter(lambda: f.read(BLOCK), b"")
            if pending:
                yield b"".join(pending)
        try:
            status, doc = self.request("POST", PREFIX + "batch", body, {
                "Content-Length": str(len(head) + sum(i[2] for i in items)),
                "Content-Type": "application/octet-stream"})
        except NoSuchAction:
            return None
        return doc.get("stored", 0), doc.get("stored_bytes", 0)

    def post(self, action, doc):
        body = json.dumps(doc).encode()
        return self.request("POST", PREFIX + action, body, {"Content-Type": "application/json"})[1]

    def put(self, rel, path, signature=None):
        """Upload one file (with its detached signature, for a cache that requires them)."""
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            headers = {"Content-Length": str(size), SHA256_HEADER: sha256_of(f),
                       "Content-Type": "application/octet-stream"}
            if signature is not None:
                headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode("ascii")
            status, _ = self.request("PUT", PREFIX + urllib.parse.quote(rel), f, headers)
        return status == 201

    def descriptor(self):
        """The cache's equivcache.json (anonymous, as consumers read it)."""
        try:
            self.connection.request("GET", self.base + "/" + desc.NAME)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise Failure("%s: cannot reach the cache: %s" % (self.url, getattr(e, "strerror", None) or e))
        if response.status != 200:
            raise Failure("%s/%s: %d %s (is this a cache's URL?)" % (self.url, desc.NAME, response.status,
                                                                    response.reason))
        try:
            return desc.loads(data.decode("utf-8", "replace"), "%s/%s" % (self.url, desc.NAME))
        except desc.DescriptorError as e:
            raise Failure(str(e))

    def close(self):
        self.connection.close()
