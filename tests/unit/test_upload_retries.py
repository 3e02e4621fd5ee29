# SPDX-License-Identifier: MIT
#
# publish --to's requests through a proxy whose replicas are all left out
# for a moment (server/producer/connection.py): a real http server on loopback
# plays nginx answering 502 ("no live upstreams"); the pauses between tries
# are counted on a clock of the test's instead of slept.

import contextlib
import http.server
import json
import threading

import pytest

from equivcache.cli import Failure
from equivcache.server.producer import connection
from equivcache.uploadapi import REPLICA_FAIL_TIMEOUT


class Clock:
    """time for connection.py: sleep() advances it at once."""

    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds):
        self.now += seconds


@contextlib.contextmanager
def proxy(clock, down_for):
    """An http server answering 502 to every request until clock.now passes
    down_for, then 200 {"missing": []}; the statuses it answered."""
    answered = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = 502 if clock.now <= down_for else 200
            body = b"<html>502 Bad Gateway</html>" if status == 502 else json.dumps({"missing": []}).encode()
            answered.append(status)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1], answered
    finally:
        server.shutdown()
        server.server_close()


def test_a_request_outlasts_every_replica_left_out(monkeypatch):
    """nginx leaves a failed replica out REPLICA_FAIL_TIMEOUT seconds; with one
    killed and a connection to the other broken at the same moment, both are
    out: the request is tried again until they are back, and answered."""
    clock = Clock()
    monkeypatch.setattr(connection, "time", clock)
    with proxy(clock, REPLICA_FAIL_TIMEOUT) as (url, answered):
        client = connection.Upload(url, "ci-1", "secret")
        try:
            assert client.post("missing", {"files": []}) == {"missing": []}
        finally:
            client.close()
    assert answered[-1] == 200 and set(answered[:-1]) == {502}, answered
    assert clock.now > REPLICA_FAIL_TIMEOUT


def test_a_proxy_that_stays_down_ends_the_publish(monkeypatch):
    """Tried again for a while, not for ever: then a failure that names the
    cache, the request and the proxy's answer."""
    clock = Clock()
    monkeypatch.setattr(connection, "time", clock)
    with proxy(clock, float("inf")) as (url, answered):
        client = connection.Upload(url, "ci-1", "secret")
        with pytest.raises(Failure, match=r"127\.0\.0\.1:\d+: POST /upload/v1/missing: 502"):
            try:
                client.post("missing", {"files": []})
            finally:
                client.close()
    assert answered == [502] * (len(connection.RETRY_PAUSES) + 1)
    assert REPLICA_FAIL_TIMEOUT < clock.now < 60
