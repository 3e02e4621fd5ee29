# SPDX-License-Identifier: MIT
#
# EquivCacheHash: OE-core's OEEquivHash signature handler, unchanged in every
# task hash and unihash it computes, except that a hash equivalence server
# that is missing, refuses connections or dies never breaks the build.
#
# Select it with BB_SIGNATURE_HANDLER = "EquivCacheHash". Importing this
# module (the layer's addpylib does) registers it in bb.siggen, the way
# oe.sstatesig registers OEEquivHash.

import asyncio
import os
import threading
import time
import uuid
from contextlib import contextmanager

import bb.asyncrpc
import bb.runqueue
import bb.siggen
import bb.utils
import hashserv.client

try:
    import oe.sstatesig
except ImportError as e:
    raise ImportError(
        "meta-equivcache needs OE-core's Python library (oe.sstatesig): list "
        "the meta layer before meta-equivcache in BBLAYERS (%s)" % e
    ) from e

from equivcache import report
from equivcache.sstatecheck import sstate_object
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


class SignatureGeneratorEquivCacheHash(oe.sstatesig.SignatureGeneratorOEEquivHash):
    name = "EquivCacheHash"

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

    def get_unihashes(self, tids):
        tids = list(tids)
        record = report.current()
        asked = [tid for tid in tids if not self.get_cached_unihash(tid)] if record else []
        if not self.equivcache_away:
            try:
                start = time.monotonic()
                answers = super().get_unihashes(tids)
                if asked:
                    record.unihash_call(asked, answers, self.taskhash, time.monotonic() - start)
                return answers
            except ServerAway as e:
                self.equivcache_server_away(e.error, "querying unihashes")
        if record:
            record.unihashes_guessed(asked)

        # As OEEquivHash does for a task the server does not know: the
        # unihash is the task hash, unless this build already has one.
        result = {}
        for tid in tids:
            unihash = self.get_cached_unihash(tid)
            if not unihash:
                unihash = self.taskhash[tid]
                self.set_unihash(tid, unihash)
            result[tid] = unihash
        return result

    def unihashes_exist(self, query):
        if not self.equivcache_away:
            try:
                return super().unihashes_exist(query)
            except ServerAway as e:
                self.equivcache_server_away(e.error, "checking unihashes")
        return {key: False for key in query}

    def report_unihash(self, path, task, d):
        if self.equivcache_away:
            hashequiv_logger.debug("Not reporting %s: hash equivalence server %s is away" % (task, self.server))
            return
        try:
            super().report_unihash(path, task, d)
        except ServerAway as e:
            self.equivcache_server_away(e.error, "reporting an output hash")

    def report_unihash_equiv(self, tid, taskhash, wanted_unihash, current_unihash, datacaches):
        if self.equivcache_away:
            return False
        try:
            return super().report_unihash_equiv(tid, taskhash, wanted_unihash, current_unihash, datacaches)
        except ServerAway as e:
            if isinstance(e.error, bb.asyncrpc.InvokeError):
                # The server answered and refused: a read-only endpoint
                # (anonymous @read). Not an outage: go on asking it.
                hashequiv_logger.verbose("Hash equivalence server %s refused the equivalence report of %s: %s"
                                         % (self.server, tid, e))
            else:
                self.equivcache_server_away(e.error, "reporting an equivalence")
            return False

    def checkhashes(self, sq_data, missed, found, d):
        """Called by sstate_checkhashes with what it found (locally or on a
        mirror) and missed: recorded for the build report."""
        super().checkhashes(sq_data, missed, found, d)
        record = report.current()
        if record is None:
            return
        try:
            sstate_dir = d.getVar("SSTATE_DIR")
            entries = {}
            for tid in sq_data["hash"]:
                path = os.path.join(sstate_dir, sstate_object(sq_data, tid, d))
                if tid in missed:
                    where = "missed"
                else:
                    # A mirror object is only checked, not yet downloaded.
                    where = "local" if os.path.exists(path) else "mirror"
                entries[tid] = {
                    "recipe": self.tidtopn.get(tid) or bb.runqueue.fn_from_tid(tid),
                    "task": bb.runqueue.taskname_from_tid(tid),
                    "unihash": sq_data["unihash"][tid],
                    "taskhash": sq_data["hash"][tid],
                    "where": where,
                    "path": path,
                }
            record.sstate_checked(entries)
        except Exception as e:
            # The report never breaks a build.
            hashequiv_logger.debug("equivcache: cannot record the sstate check: %s" % describe_error(e))

    def save_unitaskhashes(self):
        # Unihashes guessed while the server was away must not outlive this
        # build: saved, they would be taken from the cache next time instead
        # of being asked from the server, and the mirror would keep missing.
        if self.equivcache_away:
            hashequiv_logger.debug("Not saving the unihash cache: hash equivalence server %s was away" % self.server)
            return
        super().save_unitaskhashes()


# Insert the class into siggen's namespace so BB_SIGNATURE_HANDLER can select it
bb.siggen.SignatureGeneratorEquivCacheHash = SignatureGeneratorEquivCacheHash
