# SPDX-License-Identifier: MIT
#
# lib/equivcache/buildlock.py with a real flock on bitbake.lock and a real
# unix socket standing in for a bitbake server that waits to exit.

import fcntl
import os
import socket
import threading

import pytest

from equivcache import buildlock


def hold_lock(builddir):
    f = open(os.path.join(builddir, "bitbake.lock"), "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def test_server_running_follows_the_lock(tmp_path):
    assert not buildlock.server_running(str(tmp_path))   # no bitbake.lock at all
    lock = hold_lock(str(tmp_path))
    assert buildlock.server_running(str(tmp_path))
    lock.close()
    assert not buildlock.server_running(str(tmp_path))


def test_a_server_waiting_to_exit_is_woken(tmp_path):
    """A server that exits only when a connection ends its wait (as bitbake
    2.18's does after its last command) is gone well before the deadline."""
    builddir = str(tmp_path)
    lock = hold_lock(builddir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(builddir, "bitbake.sock"))
    sock.listen(1)
    sock.settimeout(10)
    woken = []

    def server():
        try:
            conn, _ = sock.accept()
            conn.close()
            woken.append(True)
        except OSError:
            pass
        lock.close()

    thread = threading.Thread(target=server)
    thread.start()
    try:
        buildlock.wait_for_server_exit(builddir, deadline=5)
    finally:
        thread.join()
        sock.close()
    assert woken == [True]


def test_a_server_that_stays_times_out(tmp_path):
    builddir = str(tmp_path)
    lock = hold_lock(builddir)
    try:
        buildlock.wake(builddir)   # no socket: nothing to wake, no error
        with pytest.raises(TimeoutError, match="did not exit within 0 s"):
            buildlock.wait_for_server_exit(builddir, deadline=0)
    finally:
        lock.close()
