# SPDX-License-Identifier: MIT
#
# The http mirror of a cache directory: sstate-cache/, downloads/, the
# descriptor and the index, read-only. GET and HEAD with Content-Length,
# Last-Modified and single byte ranges (206, 416); every other method 405;
# no directory listings; nothing outside the published names, symlinks
# included. One thread per connection, files sent with sendfile(2).
# Pure Python: no bb import.

import email.utils
import http.server
import logging
import os
import posixpath
import socket
import stat
import threading
import time
import urllib.parse

from equivcache.server.store.storage import PUBLIC

logger = logging.getLogger("equivcache.mirror")

CHUNK = 1 << 20


def parse_range(header, size):
    """(start, end) inclusive for a "bytes=" Range header, "unsatisfiable",
    or None to send the whole file (absent, malformed or multi-range headers
    are ignored, as RFC 9110 allows)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    spec = header[len("bytes="):].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            if not last:
                return None
            length = int(last)
            if length <= 0:
                return "unsatisfiable"
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or (last and end < start):
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def open_published(root, url_path):
    """(open file, real path) of the file under root that url_path names,
    or None: only the published names, no "..", no hidden name (an upload
    or copy under way), no symbolic link leading out of its area, nothing
    but a regular file (opened without blocking: no FIFO holds a reader).
    Where the file really is comes from the kernel's name of the open
    descriptor (/proc/self/fd): one call, not realpath()'s lstat of every
    component, for every GET."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if "\0" in path:
        return None
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    if not parts or parts[0] not in PUBLIC or any(p.startswith(".") for p in parts):
        return None
    candidate = os.path.join(root, *parts)
    try:
        fd = os.open(candidate, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        top = real_path(os.path.join(root, parts[0]))
        real = real_path(candidate, fd)
        if (real == top or real.startswith(top + os.sep)) and stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb"), real
    except OSError:
        pass
    os.close(fd)
    return None


def real_path(path, fd=None):
    """The absolute path without symbolic links of path (open as fd, if given)."""
    try:
        if fd is not None:
            return os.readlink("/proc/self/fd/%d" % fd)
        fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC)
        try:
            return os.readlink("/proc/self/fd/%d" % fd)
        finally:
            os.close(fd)
    except FileNotFoundError:   # no /proc here, or path gone
        return os.path.realpath(path)


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    server_version = "equivcache-mirror"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        logger.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self.send_file(body=True)

    def do_HEAD(self):
        self.send_file(body=False)

    def empty(self, status, *headers):
        """An answer without a body."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.say_closing()
        self.end_headers()

    def say_closing(self):
        """Where the connection closes after this answer, the answer says so:
        a proxy keeping connections alive (nginx) sends no other request on it."""
        if self.close_connection:
            self.send_header("Connection", "close")

    def refuse(self):
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True   # a body left unread
        self.empty(405, ("Allow", "GET, HEAD"))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_MKCOL = do_PROPFIND = do_MOVE = do_COPY = refuse

    def send_file(self, body):
        published = open_published(self.server.root, self.path)
        if published is None:
            self.empty(404)
            return
        f, path = published
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self.empty(416, ("Content-Range", "bytes */%d" % size))
                return
            if wanted is None:
                start, length = 0, size
                self.send_response(200)
            else:
                start, length = wanted[0], wanted[1] - wanted[0] + 1
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (wanted[0], wanted[1], size))
            self.send_header("Content-Type", "application/octet-stream"
                             if not path.endswith(".json") else "application/json")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.end_headers()
            if body and length:
                try:
                    self.wfile.flush()
                    self.connection.sendfile(f, start, length)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                self.used(path)

    def used(self, path):
        """A download is a use (gc evicts the least recently used): its atime, set off the reader's path."""
        if path.startswith(self.server.root + os.sep + "sstate-cache" + os.sep) or \
                path.startswith(self.server.root + os.sep + "siginfo" + os.sep):
            self.server.note_use(path)


class MirrorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    # Downloads' access times are set by a thread of their own, this often:
    # a reader never waits for a metadata write (nor for the journal of a
    # file system that an upload syncs).
    USE_FLUSH = 2.0

    def __init__(self, root, address=("127.0.0.1", 0), handler=MirrorHandler):
        self.root = os.path.realpath(root)
        self._uses, self._uses_lock, self._flusher = {}, threading.Lock(), None
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, handler)

    def note_use(self, path):
        with self._uses_lock:
            self._uses[path] = time.time_ns()
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
                self._flusher.start()

    def _flush_loop(self):
        while True:
            time.sleep(self.USE_FLUSH)
            self.flush_uses()

    def flush_uses(self):
        """The access times of the downloads noted since the last flush; the mtime (publish's) kept."""
        with self._uses_lock:
            uses, self._uses = self._uses, {}
        for path, when in uses.items():
            try:
                os.utime(path, ns=(when, os.stat(path).st_mtime_ns))
            except OSError:   # removed by gc meanwhile, or not ours to change
                pass

    def server_close(self):
        self.flush_uses()
        super().server_close()

    @property
    def url(self):
        host, port = self.server_address[:2]
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d" % (host, port)
