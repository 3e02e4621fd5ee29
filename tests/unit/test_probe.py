# SPDX-License-Identifier: MIT
#
# The probes against real listeners on loopback and unix sockets.

import http.server
import threading
import time

import pytest

from equivcache import probe
from oeqa.utils.equivcache import free_port, silent_listener


@pytest.fixture
def http_root(tmp_path):
    (tmp_path / "sstate-cache").mkdir()
    (tmp_path / "equivcache.json").write_text('{"a": 1}')
    (tmp_path / "big").write_bytes(b"x" * 2048)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http(http_root):
    assert probe.http(http_root + "/sstate-cache/", 2) is None
    assert probe.http(http_root + "/no-such-dir/", 2) is None          # a 404 is an answer
    assert "ConnectionRefusedError" in probe.http("http://127.0.0.1:%d/" % free_port(), 2)
    assert probe.http("not a url", 2)


def test_http_silent_host():
    """A mirror host that accepts the connection and never answers: a reason within the timeout."""
    with silent_listener() as listener:
        start = time.monotonic()
        reason = probe.http("http://127.0.0.1:%d/sstate-cache/" % listener.getsockname()[1], 0.5)
        assert "timed out" in reason
        assert time.monotonic() - start < 1.5


def test_fetch(http_root, tmp_path):
    assert probe.fetch(http_root + "/equivcache.json", 2) == b'{"a": 1}'
    assert probe.fetch("file://%s/equivcache.json" % tmp_path, 2) == b'{"a": 1}'
    with pytest.raises(OSError, match="HTTP 404"):
        probe.fetch(http_root + "/missing.json", 2)
    with pytest.raises(OSError, match="larger than 1024 bytes"):
        probe.fetch(http_root + "/big", 2, limit=1024)
    with pytest.raises(OSError, match="ConnectionRefusedError"):
        probe.fetch("http://127.0.0.1:%d/x" % free_port(), 2)


def test_directory(tmp_path):
    assert probe.directory(str(tmp_path)) is None
    assert probe.directory(str(tmp_path / "nope")) == "no such directory"
    (tmp_path / "f").write_text("")
    assert probe.directory(str(tmp_path / "f")) == "not a directory"


def test_run_in_parallel(http_root, tmp_path):
    def parse(address):
        host, port = address.rsplit(":", 1)
        return ("tcp", host, int(port))

    port = free_port()
    results = probe.run([("http", http_root + "/"), ("dir", str(tmp_path)), ("dir", str(tmp_path)),
                         ("server", "127.0.0.1:%d" % port), ("server", "nonsense")], 2, parse)
    assert results[("http", http_root + "/")] is None
    assert results[("dir", str(tmp_path))] is None
    assert "ConnectionRefusedError" in results[("server", "127.0.0.1:%d" % port)]
    assert results[("server", "nonsense")].startswith("not an address")
    assert len(results) == 4
    assert probe.run([], 2) == {}
