# SPDX-License-Identifier: MIT
#
# The http mirror (lib/equivcache/server/mirrorhttp.py), a real server on loopback:
# HEAD, Content-Length, byte ranges, no directory escape, read-only, and many
# concurrent downloads.

import hashlib
import http.client
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from equivcache.server.http.mirror import MirrorServer, parse_range

OBJ = "sstate-cache/ad/72/sstate:a::1.0:r0::12:ad72_populate_sysroot.tar.zst"


@pytest.mark.parametrize("header, expected", [
    (None, None), ("", None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-5", (95, 99)),
    ("bytes=90-1000", (90, 99)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"),
    ("bytes=5-2", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=x-1", None), ("bytes=-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mirror")
    root = tmp_path / "cache"
    data = os.urandom(300000)
    for rel, content in ((OBJ, data), ("equivcache.json", b"{}"), ("downloads/zlib-1.3.1.tar.xz", b"z" * 10),
                         ("hashserv.db", b"secret"), ("server/admin.json", b"secret")):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(str(tmp_path / "outside"), str(root / "sstate-cache" / "escape"))
    os.mkfifo(str(root / "sstate-cache" / "fifo"))   # opened, it would hold a reader until a writer came
    server = MirrorServer(str(root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, data
    server.shutdown()
    server.server_close()


def request(server, method, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def test_get_and_head(mirror):
    server, data = mirror
    status, headers, body = request(server, "GET", "/" + OBJ)
    assert (status, body, headers["Content-Length"]) == (200, data, str(len(data)))
    status, headers, body = request(server, "HEAD", "/" + OBJ)
    assert (status, body, headers["Content-Length"], headers["Accept-Ranges"]) == (200, b"", str(len(data)), "bytes")
    assert "Last-Modified" in headers
    status, headers, _ = request(server, "GET", "/equivcache.json")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    # URL-encoded names, as the fetcher sends them
    assert request(server, "GET", "/" + OBJ.replace(":", "%3A"))[0] == 200


def test_ranges(mirror):
    server, data = mirror
    status, headers, body = request(server, "GET", "/" + OBJ, {"Range": "bytes=1000-1999"})
    assert (status, body, headers["Content-Range"]) == (206, data[1000:2000], "bytes 1000-1999/%d" % len(data))
    status, headers, body = request(server, "GET", "/" + OBJ, {"Range": "bytes=-10"})
    assert (status, body) == (206, data[-10:])
    status, headers, body = request(server, "GET", "/" + OBJ, {"Range": "bytes=%d-" % len(data)})
    assert (status, headers["Content-Range"]) == (416, "bytes */%d" % len(data))


@pytest.mark.parametrize("path", [
    "/hashserv.db", "/server/admin.json", "/sstate-cache/../hashserv.db", "/sstate-cache/%2e%2e/hashserv.db",
    "/sstate-cache/..%2fhashserv.db", "/sstate-cache/escape", "/sstate-cache/", "/sstate-cache", "/",
    "/sstate-cache/missing", "/%00", "//etc/passwd", "/sstate-cache/fifo",
])
def test_nothing_else_is_served(mirror, path):
    server, _ = mirror
    status, _, body = request(server, "GET", path)
    assert status == 404 and b"secret" not in body


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "MKCOL", "PROPFIND"])
def test_read_only(mirror, method):
    server, _ = mirror
    status, headers, _ = request(server, method, "/equivcache.json")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")


def test_kept_alive_until_it_says_otherwise(mirror):
    """On one connection (as nginx keeps them to its upstreams): answers keep it alive; a refused request
    whose body is left unread says "Connection: close" before the server closes it, so that a proxy sends
    no other request on it."""
    server, data = mirror
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        for method, body, status, closing in (("GET", None, 200, None), ("POST", None, 405, None),
                                              ("GET", None, 200, None), ("POST", b"x" * 100, 405, "close")):
            conn.request(method, "/equivcache.json", body=body)
            answer = conn.getresponse()
            answer.read()
            assert (answer.status, answer.getheader("Connection")) == (status, closing), method
            assert (conn.sock is None) == bool(closing)   # http.client closed it as told
    finally:
        conn.close()


def test_many_concurrent_downloads(mirror):
    server, data = mirror
    digest = hashlib.sha256(data).hexdigest()

    def fetch(i):
        status, _, body = request(server, "GET", "/" + OBJ)
        return status, hashlib.sha256(body).hexdigest()

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(fetch, range(256)))
    assert results == [(200, digest)] * 256


def test_keep_alive(mirror):
    server, data = mirror
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    for _ in range(3):
        conn.request("HEAD", "/" + OBJ)
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
    conn.request("GET", "/" + OBJ)
    assert conn.getresponse().read() == data
    conn.close()
