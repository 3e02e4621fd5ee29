# SPDX-License-Identifier: MIT
#
# EquivCacheHash against a real bitbake-hashserv on a unix socket: up,
# stopped, killed while a client holds a stream open, and behind a relay
# that closes the connection in the middle of an answer.

import hashlib
import logging
import os
import signal
import socket
import threading
import time

import pytest

from conftest import need_bitbake
from oeqa.utils.equivcache import HashServer, silent_listener

need_bitbake()

import bb.data  # noqa: E402
import hashserv  # noqa: E402
import oe.sstatesig  # noqa: E402

from equivcache.capabilities import stock_survives_outage  # noqa: E402
from equivcache.siggen import ServerAway, SignatureGeneratorEquivCacheHash  # noqa: E402
from equivcache.hashclient import cancel_pending  # noqa: E402

METHOD = "oe.sstatesig.OEOuthashBasic"


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


class CuttingRelay:
    """A unix socket relay to the real server that closes every connection
    after passing `cut_after` bytes of the server's answers."""

    def __init__(self, directory, upstream, cut_after):
        self.socket = os.path.join(directory, "relay.sock")
        self.address = "unix://" + self.socket
        self.upstream = upstream
        self.cut_after = cut_after
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.socket)
        self.listener.listen(16)
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            threading.Thread(target=self.pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, self.cut_after), daemon=True).start()

    @staticmethod
    def pump(source, sink, limit):
        passed = 0
        try:
            while limit is None or passed < limit:
                data = source.recv(4096 if limit is None else min(4096, limit - passed))
                if not data:
                    break
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()


@pytest.fixture
def server(tmp_path):
    s = HashServer(str(tmp_path))
    yield s
    s.stop(signal.SIGKILL)


@pytest.fixture
def warnings_seen():
    """The messages of every WARNING that bitbake's logger emits."""
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno == logging.WARNING:
                seen.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("BitBake")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def datastore(address, persistent, max_parallel=1):
    d = bb.data.init()
    d.setVar("BB_HASHSERVE", address)
    d.setVar("BB_HASHSERVE_MAX_PARALLEL", str(max_parallel))
    d.setVar("SSTATE_HASHEQUIV_METHOD", METHOD)
    d.setVar("PERSISTENT_DIR", str(persistent))
    return d


def add_tasks(handler, count):
    """Give the handler `count` setscene tasks with known task hashes."""
    tids = []
    for i in range(count):
        tid = "/layer/recipes/r%d/r%d_1.0.bb:do_populate_sysroot" % (i, i)
        handler.taskhash[tid] = sha256("task %d" % i)
        handler.tidtopn[tid] = "r%d" % i
        # As get_taskhash() records it for the locked signatures (read by
        # wrynose's get_cached_unihash()).
        handler.lockedpnmap[tid.rsplit(":", 1)[0]] = "r%d" % i
        handler.setscenetasks.add(tid)
        tids.append(tid)
    return tids


def report_equivalent(server, handler, tid, unihash):
    """Record on the server that tid's task hash has the output of `unihash`."""
    with hashserv.create_client(server.address) as client:
        outhash = sha256("output of " + tid)
        client.report_unihash(sha256("older task of " + tid), METHOD, outhash, unihash)
        answer = client.report_unihash(handler.taskhash[tid], METHOD, outhash, handler.taskhash[tid])
    assert answer["unihash"] == unihash


def test_registered_in_bb_siggen():
    assert bb.siggen.SignatureGeneratorEquivCacheHash is SignatureGeneratorEquivCacheHash
    assert issubclass(SignatureGeneratorEquivCacheHash, oe.sstatesig.SignatureGeneratorOEEquivHash)
    d = datastore("unix:///nonexistent.sock", "/nonexistent")
    d.setVar("BB_SIGNATURE_HANDLER", "EquivCacheHash")
    d.setVar("PERSISTENT_DIR", "")
    assert type(bb.siggen.init(d)) is SignatureGeneratorEquivCacheHash


# 1: one client, streamed batches; 4: hashserv's ClientPool, in a thread.
parallel = pytest.mark.parametrize("max_parallel", [1, 4])


@parallel
def test_server_up_same_unihashes_as_oeequivhash(server, tmp_path, warnings_seen, max_parallel):
    ours = SignatureGeneratorEquivCacheHash(datastore(server.address, tmp_path / "ours", max_parallel))
    stock = oe.sstatesig.SignatureGeneratorOEEquivHash(datastore(server.address, tmp_path / "stock", max_parallel))
    tids = add_tasks(ours, 50)
    add_tasks(stock, 50)
    equivalent = sha256("the unihash of an equivalent build")
    report_equivalent(server, ours, tids[7], equivalent)

    got = ours.get_unihashes(tids)
    assert got == stock.get_unihashes(tids)
    assert got[tids[7]] == equivalent
    assert all(got[t] == ours.taskhash[t] for t in tids if t != tids[7])
    assert warnings_seen == []
    assert ours.equivcache_away is False
    ours.exit()
    stock.exit()


@parallel
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_server_stopped(server, tmp_path, warnings_seen, max_parallel):
    persistent = tmp_path / "persistent"
    handler = SignatureGeneratorEquivCacheHash(datastore(server.address, persistent, max_parallel))
    tids = add_tasks(handler, 5)
    server.stop()

    stock = oe.sstatesig.SignatureGeneratorOEEquivHash(datastore(server.address, tmp_path / "stock", max_parallel))
    add_tasks(stock, 5)
    if stock_survives_outage():
        # bitbake 2.18 (wrynose): stock warns for each query, guesses, and would save its guesses.
        assert stock.get_unihashes(tids) == {t: stock.taskhash[t] for t in tids}
        assert len(warnings_seen) == 1 and "Error contacting Hash Equivalence Server" in warnings_seen[0]
        stock.save_unitaskhashes()
        assert (tmp_path / "stock" / "bb_unihashes.dat").exists()
        del warnings_seen[:]
    elif max_parallel == 1:
        with pytest.raises(OSError):
            stock.get_unihashes(tids)
    else:
        # Upstream's pool thread dies, and its guesses would be saved.
        assert stock.get_unihashes(tids) == {t: stock.taskhash[t] for t in tids}
        stock.save_unitaskhashes()
        assert (tmp_path / "stock" / "bb_unihashes.dat").exists()

    assert handler.get_unihashes(tids[:2]) == {t: handler.taskhash[t] for t in tids[:2]}
    assert handler.get_unihashes(tids) == {t: handler.taskhash[t] for t in tids}
    assert handler.unihashes_exist({"k": handler.taskhash[tids[0]]}) == {"k": False}
    assert handler.report_unihash_equiv(tids[0], handler.taskhash[tids[0]], sha256("x"), handler.taskhash[tids[0]], None) is False
    assert len(warnings_seen) == 1, warnings_seen
    assert server.address in warnings_seen[0]
    assert "querying unihashes" in warnings_seen[0]
    assert handler.equivcache_away is True

    # Guessed unihashes are not saved for the next build.
    handler.save_unitaskhashes()
    assert not (persistent / "bb_unihashes.dat").exists()
    handler.exit()


def server_requests(server):
    with hashserv.create_client(server.address) as client:
        return client.get_stats()["requests"]["num"]


@parallel
def test_silent_server_bounded(tmp_path, warnings_seen, max_parallel):
    """A host that accepts connections and never answers: the first query
    gives up after about EQUIVCACHE_SERVER_TIMEOUT (bitbake's own retries
    would take 16 of them), one warning, then no more asking."""
    silent = silent_listener()
    try:
        d = datastore("127.0.0.1:%d" % silent.getsockname()[1], tmp_path / "persistent", max_parallel)
        d.setVar("EQUIVCACHE_SERVER_TIMEOUT", "1")
        handler = SignatureGeneratorEquivCacheHash(d)
        tids = add_tasks(handler, 5)
        start = time.monotonic()
        assert handler.get_unihashes(tids) == {t: handler.taskhash[t] for t in tids}
        took = time.monotonic() - start
        assert handler.equivcache_away is True
        assert len(warnings_seen) == 1 and "Timed out waiting for data" in warnings_seen[0], warnings_seen
        assert took < 4, "gave up after %.1f s, not about 1 s" % took
        handler.exit()
    finally:
        silent.close()


def test_server_timeout_setting(tmp_path, warnings_seen):
    d = datastore("unix:///nonexistent.sock", tmp_path)
    assert SignatureGeneratorEquivCacheHash(d).equivcache_timeout == 10
    d.setVar("EQUIVCACHE_SERVER_TIMEOUT", "2.5")
    assert SignatureGeneratorEquivCacheHash(d).equivcache_timeout == 2.5
    d.setVar("EQUIVCACHE_SERVER_TIMEOUT", "soon")
    assert SignatureGeneratorEquivCacheHash(d).equivcache_timeout == 10
    assert len(warnings_seen) == 1 and 'EQUIVCACHE_SERVER_TIMEOUT = "soon"' in warnings_seen[0]


def test_read_only_endpoint_refusal_is_not_an_outage(tmp_path, warnings_seen):
    """A server that answers but refuses reports (anonymous @read, as
    equivcache-server's read endpoint) is still asked for unihashes."""
    server = HashServer(str(tmp_path), anon_perms="@read")
    try:
        handler = SignatureGeneratorEquivCacheHash(datastore(server.address, tmp_path / "p"))
        tids = add_tasks(handler, 3)
        handler.get_unihashes(tids)
        wanted = sha256("wanted")
        assert handler.report_unihash_equiv(tids[0], handler.taskhash[tids[0]], wanted,
                                            handler.taskhash[tids[0]], None) is False
        assert handler.equivcache_away is False and warnings_seen == []
        # Still asking the server: a query after the refusal reaches it.
        before = server_requests(server)
        assert handler.get_unihashes([tids[1]]) == {tids[1]: handler.taskhash[tids[1]]}
        assert server_requests(server) > before
        assert handler.equivcache_away is False and warnings_seen == []
    finally:
        server.stop()


def test_socket_missing_from_start(tmp_path, warnings_seen):
    address = "unix://%s/no-such-dir/hashserve.sock" % tmp_path
    handler = SignatureGeneratorEquivCacheHash(datastore(address, tmp_path / "persistent"))
    tids = add_tasks(handler, 3)
    with pytest.raises(ServerAway) as caught:
        with handler.client():
            pass
    assert isinstance(caught.value.error, FileNotFoundError)
    assert handler.get_unihashes(tids) == {t: handler.taskhash[t] for t in tids}
    assert len(warnings_seen) == 1 and address in warnings_seen[0], warnings_seen


@parallel
def test_server_killed_with_connections_open(server, tmp_path, warnings_seen, max_parallel):
    handler = SignatureGeneratorEquivCacheHash(datastore(server.address, tmp_path / "persistent", max_parallel))
    tids = add_tasks(handler, 20)
    equivalent = sha256("equivalent")
    report_equivalent(server, handler, tids[0], equivalent)
    assert handler.get_unihashes(tids[:10])[tids[0]] == equivalent   # connections stay open

    server.stop(signal.SIGKILL)
    assert handler.get_unihashes(tids[10:]) == {t: handler.taskhash[t] for t in tids[10:]}
    # What the build had before the server died stays valid.
    assert handler.get_unihashes([tids[0]]) == {tids[0]: equivalent}
    assert len(warnings_seen) == 1 and server.address in warnings_seen[0], warnings_seen
    handler.exit()


def test_connection_closed_mid_answer(server, tmp_path, warnings_seen):
    tids_count = 2000
    relay = CuttingRelay(str(tmp_path), server.socket, cut_after=100)
    try:
        stock = oe.sstatesig.SignatureGeneratorOEEquivHash(datastore(relay.address, tmp_path / "stock"))
        tids = add_tasks(stock, tids_count)
        if stock_survives_outage():
            # bitbake 2.18 (wrynose): stock warns and guesses.
            assert stock.get_unihashes(tids) == {t: stock.taskhash[t] for t in tids}
            assert len(warnings_seen) == 1 and "Error contacting Hash Equivalence Server" in warnings_seen[0]
            del warnings_seen[:]
        else:
            with pytest.raises(ConnectionError):
                stock.get_unihashes(tids)
        for client in (stock._client, getattr(stock, "_client_pool", None)):
            cancel_pending(client)   # what stock's exit() would leave pending after the cut
        stock.exit()

        handler = SignatureGeneratorEquivCacheHash(datastore(relay.address, tmp_path / "ours"))
        add_tasks(handler, tids_count)
        assert handler.get_unihashes(tids) == {t: handler.taskhash[t] for t in tids}
        assert len(warnings_seen) == 1 and relay.address in warnings_seen[0], warnings_seen
        assert relay.connections >= 2   # the client retried before giving up
        handler.exit()
    finally:
        relay.close()


def test_taskdata_carries_outage_state(tmp_path):
    address = "unix://%s/no-such.sock" % tmp_path
    cooker = SignatureGeneratorEquivCacheHash(datastore(address, tmp_path / "persistent"))
    add_tasks(cooker, 2)
    cooker.get_unihashes(list(cooker.taskhash))
    worker = SignatureGeneratorEquivCacheHash(datastore(address, tmp_path / "worker"))
    worker.set_taskdata(cooker.get_taskdata())
    assert worker.equivcache_away is True
    assert worker.equivcache_token == cooker.equivcache_token
    assert worker.equivcache_marker == cooker.equivcache_marker
    assert worker.server == address
    assert worker.taskhash == cooker.taskhash
    assert worker.unihash == cooker.unihash


def test_one_warning_per_build_across_processes(tmp_path, warnings_seen):
    # A worker (another handler with the cooker's task data) that meets the
    # outage after the cooker warned stays silent; the next build warns again.
    address = "unix://%s/no-such.sock" % tmp_path
    cooker = SignatureGeneratorEquivCacheHash(datastore(address, tmp_path / "persistent"))
    data = cooker.get_taskdata()
    cooker.equivcache_server_away(ConnectionRefusedError(111, "refused"), "querying unihashes")
    worker = SignatureGeneratorEquivCacheHash(datastore(address, tmp_path / "persistent"))
    worker.set_taskdata(data)
    worker.equivcache_server_away(ConnectionRefusedError(111, "refused"), "reporting an output hash")
    assert len(warnings_seen) == 1

    cooker.reset(datastore(address, tmp_path / "persistent"))
    cooker.equivcache_server_away(ConnectionRefusedError(111, "refused"), "querying unihashes")
    assert len(warnings_seen) == 2


def test_equivcache_module_has_no_fork_of_oe_core():
    # The handler overrides only what failure handling needs; signatures
    # come from OEEquivHash's own code.
    own = set(vars(SignatureGeneratorEquivCacheHash))
    assert not own & {"get_taskhash", "prep_taskhash", "get_cached_unihash", "set_unihash", "dump_sigtask"}
