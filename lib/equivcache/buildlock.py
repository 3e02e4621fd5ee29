# SPDX-License-Identifier: MIT
#
# A build directory's bitbake lock: wait until no bitbake server holds it.

import fcntl
import os
import socket
import time


def server_running(builddir):
    """Whether a bitbake server holds `builddir`'s bitbake.lock now."""
    try:
        with open(os.path.join(builddir, "bitbake.lock"), "r") as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def wait_for_server_exit(builddir, deadline=60):
    """Wait until no bitbake server holds `builddir`'s bitbake.lock. A
    bitbake command started while the previous server is still shutting
    down reconnects to it ("Reconnecting to bitbake server") and keeps its
    state, the auto hash equivalence server included. A server waiting to
    exit is woken first (wake()). TimeoutError past `deadline` seconds."""
    end = time.monotonic() + deadline
    if server_running(builddir):
        wake(builddir)
    while server_running(builddir):
        if time.monotonic() > end:
            raise TimeoutError("the bitbake server of %s did not exit within %d s" % (builddir, deadline))
        time.sleep(0.1)


def wake(builddir):
    """A bitbake server that has served its last command waits in select()
    before it exits (a second on bitbake 2.18): a connection to its socket
    ends that wait. A server that stays (BB_SERVER_TIMEOUT) takes it for a
    client that left at once, and stays."""
    path = os.path.join(builddir, "bitbake.sock")
    if len(os.fsencode(path)) >= 108:   # sun_path; bitbake itself connects from inside builddir
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            pass
