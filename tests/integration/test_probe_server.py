# SPDX-License-Identifier: MIT
#
# The class's server probe against a real bitbake-hashserv (it pings, as a
# client would), a closed port, a missing socket, a host that accepts and
# never answers, and an http server where a hash server was expected.

import os
import socket
import time

from conftest import need_bitbake

need_bitbake()

from equivcache import probe  # noqa: E402
from oeqa.utils.equivcache import HashServer, HttpMirror, free_port, silent_listener  # noqa: E402


def test_server_answers_or_not(tmp_path):
    """A real bitbake-hashserv answers the ping, on TCP and on a unix socket;
    a closed port, a socket nobody listens on and a missing one do not."""
    port = free_port()
    tcp = HashServer(str(tmp_path), address="127.0.0.1:%d" % port)
    try:
        assert probe.server(("tcp", "127.0.0.1", port), 2) is None
    finally:
        tcp.kill()
    assert "ConnectionRefusedError" in probe.server(("tcp", "127.0.0.1", port), 2)
    unix = HashServer(str(tmp_path), database=str(tmp_path / "other.db"))
    try:
        assert probe.server(("unix", unix.socket), 2) is None
    finally:
        unix.kill()
    assert "ConnectionRefusedError" in probe.server(("unix", unix.socket), 2)   # the file stays, nobody listens
    os.unlink(unix.socket)
    assert "FileNotFoundError" in probe.server(("unix", unix.socket), 2)


def test_server_silent_or_foreign(tmp_path):
    """A host that accepts and never answers is caught within the timeout; an
    http server on a hash equivalence server's address is not one."""
    for family, address in ((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_UNIX, str(tmp_path / "silent.sock"))):
        with silent_listener(address, family) as listener:
            target = ("unix", address) if family == socket.AF_UNIX else ("tcp",) + listener.getsockname()
            start = time.monotonic()
            assert probe.server(target, 0.5) == "connected, but no answer within 0.5 s"
            assert time.monotonic() - start < 1.5
    (tmp_path / "sstate-cache").mkdir()
    mirror = HttpMirror(str(tmp_path))
    host, port = mirror.url.split("//")[1].split(":")
    assert probe.server(("tcp", host, int(port)), 2) == "answered, but not as a hash equivalence server"
    # ws://: any HTTP answer counts; silence does not.
    assert probe.server(("ws", host, int(port), False), 2) is None
    with silent_listener() as listener:
        assert probe.server(("ws", "127.0.0.1", listener.getsockname()[1], False), 0.5) == \
            "connected, but no answer within 0.5 s"
    mirror.close()
