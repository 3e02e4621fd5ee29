# SPDX-License-Identifier: MIT
#
# The hash equivalence client side of EquivCacheHash (lib/equivcache/siggen.py):
# bitbake's clients bounded in time, a ClientPool whose failures reach the
# caller, and AwayTolerantClients, the handler's part that turns any client
# failure into ServerAway and warns once per build that the server is away.

import asyncio
import os
import threading
import time
import uuid
from contextlib import contextmanager

import bb.asyncrpc
import bb.siggen
import hashserv.client

from equivcache import report
from equivcache.outage import claim_once, describe_error, outage_message

hashequiv_logger = bb.siggen.hashequiv_logger

# How a hash equivalence client fails when the server is away. OSError covers
# ConnectionError (refused, reset), FileNotFoundError (no unix socket) and
# timeouts; EOFError covers asyncio.IncompleteReadError (closed mid-answer).
SERVER_ERRORS = (
    OSError,
    EOFError,
    bb.asyncrpc.ConnectionClosedError,
    bb.asyncrpc.InvokeError,
)


class ServerAway(Exception):
    """A client call failed with one of SERVER_ERRORS.

    Raised from client() (and client_pool(), where bitbake has one), so that it passes through the
    "except ConnectionError" of OEEquivHash's report code (which would warn
    once per task) up to the handler's own methods, which warn once per build.
    """

    def __init__(self, error):
        super().__init__(describe_error(error))
        self.error = error


# Seconds a hash equivalence server may take to accept a connection or to
# send an answer (EQUIVCACHE_SERVER_TIMEOUT). bitbake's client waits 30 s
# for an answer, and for a connection as long as the kernel (about 2 min to
# a host that drops packets), and retries in two nested loops: up to 16
# attempts for one streamed query, 8 minutes against a silent host.
DEFAULT_SERVER_TIMEOUT = 10.0


def bound_client(client, timeout):
    """Make a bb.asyncrpc AsyncClient, not yet connected, give up on a silent
    server: `timeout` seconds per connection and per answer, and once one of
    them has run out, every further attempt of this client fails at once, so
    that a call fails after about `timeout` seconds whatever bitbake's
    retries. The handler then stops asking for the rest of the build."""
    client.timeout = timeout
    connect = getattr(client, "_connect_sock", None)
    if connect is None:
        return client
    silent = []

    async def bounded():
        if silent:
            raise ConnectionError(silent[0])
        try:
            connection = await asyncio.wait_for(connect(), timeout)
        except asyncio.TimeoutError:
            silent.append("no connection within %g s" % timeout)
            raise ConnectionError(silent[0])
        recv = connection.recv

        async def recv_or_silent():
            start = time.monotonic()
            try:
                return await recv()
            except ConnectionError as e:
                if time.monotonic() - start >= 0.9 * timeout:
                    silent.append(str(e))
                raise

        connection.recv = recv_or_silent
        return connection

    client._connect_sock = bounded
    return client


# scarthgap's bitbake (2.8) queries with a pool of clients in a thread
# when BB_HASHSERVE_MAX_PARALLEL > 1; bitbake 2.18 (wrynose) has no pool.
ClientPool = getattr(hashserv.client, "ClientPool", None)

if ClientPool is not None:
    class RaisingClientPool(ClientPool):
        """hashserv's ClientPool (BB_HASHSERVE_MAX_PARALLEL > 1), except that a
        failure in its worker thread is raised in the caller, and its clients
        give up on a silent server (bound_client). Upstream's thread
        dies with a traceback on stderr and leaves the answers unset, which
        OEEquivHash then takes for "no unihash known" and saves."""

        timeout = DEFAULT_SERVER_TIMEOUT

        async def _new_client(self):
            client = bound_client(await hashserv.create_async_client(
                self.address, username=self.username, password=self.password), self.timeout)
            if self.become:
                await client.become_user(self.become)
            return client

        def run_tasks(self, tasks):
            failures = []
            previous_hook = threading.excepthook
            existing = {t.ident for t in threading.enumerate()}

            def keep(args):
                # Only the pool's thread, started and joined within this call.
                if args.thread is not None and args.thread.ident not in existing:
                    failures.append(args.exc_value)
                else:
                    previous_hook(args)

            threading.excepthook = keep
            try:
                super().run_tasks(tasks)
            finally:
                threading.excepthook = previous_hook
            if failures:
                raise failures[0]


def server_timeout(data):
    """EQUIVCACHE_SERVER_TIMEOUT in seconds; a bad value is the default, with a warning."""
    value = data.getVar("EQUIVCACHE_SERVER_TIMEOUT")
    if not value:
        return DEFAULT_SERVER_TIMEOUT
    try:
        timeout = float(value)
        if 0 < timeout <= 300:
            return timeout
    except ValueError:
        pass
    bb.warn("EquivCacheHash: EQUIVCACHE_SERVER_TIMEOUT = \"%s\" is not a number of seconds above 0 and at most "
            "300; using %g." % (value, DEFAULT_SERVER_TIMEOUT))
    return DEFAULT_SERVER_TIMEOUT



def cancel_pending(client):
    """Cancel and await the tasks a sync hashserv client's (or client pool's) event loop still holds."""
    loop = getattr(client, "loop", None)
    if loop is None or loop.is_closed():
        return
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


class AwayTolerantClients:
    """The part of EquivCacheHash that owns its clients: each gives up on a
    silent server after EQUIVCACHE_SERVER_TIMEOUT, any failure is raised as
    ServerAway, and equivcache_server_away() notes the outage (one warning
    per build, shared by the cooker and the task workers through a marker
    file), after which the handler asks no more."""

    def init_rundepcheck(self, data):
        super().init_rundepcheck(data)
        # Per-build state, fresh after every build: bitbake calls reset(),
        # which runs __init__ and so this method again.
        self.equivcache_away = False
        self.equivcache_token = uuid.uuid4().hex
        self.equivcache_timeout = server_timeout(data)
        self.equivcache_marker = os.path.join(
            data.getVar("PERSISTENT_DIR") or data.getVar("CACHE") or data.getVar("TOPDIR") or os.getcwd(),
            "equivcache",
            "server-outage",
        )

    def exit(self):
        """bitbake closes the clients' event loops; what a loop still has
        pending (a batch query's reader, left by a connection closed
        mid-answer) is cancelled and awaited first, not left to the garbage
        collector after its loop is closed."""
        cancel_pending(getattr(self, "_client", None))
        cancel_pending(getattr(self, "_client_pool", None))
        return super().exit()

    def get_taskdata(self):
        return (self.equivcache_away, self.equivcache_token, self.equivcache_marker,
                self.equivcache_timeout) + super().get_taskdata()

    def set_taskdata(self, data):
        self.equivcache_away, self.equivcache_token, self.equivcache_marker, self.equivcache_timeout = data[:4]
        super().set_taskdata(data[4:])

    @contextmanager
    def client(self):
        try:
            if getattr(self, "_client", None) is None:
                with self._client_env():
                    self._client = hashserv.create_client(self.server, **self.get_hashserv_creds())
                bound_client(self._client.client, self.equivcache_timeout)
            with super().client() as client:
                yield client
        except SERVER_ERRORS as e:
            raise ServerAway(e) from e

    if ClientPool is not None:
        @contextmanager
        def client_pool(self):
            if getattr(self, "_client_pool", None) is None:
                with self._client_env():
                    self._client_pool = RaisingClientPool(self.server, self.max_parallel,
                                                          **self.get_hashserv_creds())
                    self._client_pool.timeout = self.equivcache_timeout
            try:
                with super().client_pool() as client_pool:
                    yield client_pool
            except SERVER_ERRORS as e:
                raise ServerAway(e) from e

    def equivcache_server_away(self, error, during):
        """Note that the server is away: warn once per build, then stop asking."""
        self.equivcache_away = True
        if report.current():
            report.current().unihash_error()
        hashequiv_logger.debug("Hash equivalence server %s failed while %s: %s" % (self.server, during, describe_error(error)))
        try:
            first = claim_once(self.equivcache_marker, self.equivcache_token)
        except OSError as e:
            hashequiv_logger.debug("Cannot record the outage warning in %s: %s" % (self.equivcache_marker, e))
            first = True
        if first:
            bb.warn(outage_message(self.server, error, during))
