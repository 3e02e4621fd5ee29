# SPDX-License-Identifier: MIT
#
# equivcache-server with the real bitbake-hashserv, SQLite and a real
# PostgreSQL server: serve, status, refusals, the read and write endpoints'
# permissions, and publish (twice, and while serving) losing nothing.

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import POKY_DIR, need_bitbake, needs_postgresql
from oeqa.utils.equivcache import SERVER, CacheServer, HashServer, free_port
from oeqa.utils.equivcache_services import Nginx, PostgreSQL

need_bitbake()

import bb.asyncrpc  # noqa: E402
import hashserv  # noqa: E402
from equivcache import pathkeys  # noqa: E402
from equivcache.server.hashequiv.database import merged_already, read_producer_database  # noqa: E402

METHOD = "oe.sstatesig.OEOuthashBasic"


def h(text):
    return hashlib.sha256(text.encode()).hexdigest()


def run(*args):
    return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, timeout=120)


def rows(database):
    with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % database, uri=True)) as db:
        return (set(db.execute("SELECT method, taskhash, unihash FROM unihashes_v3")),
                set(db.execute("SELECT method, taskhash, outhash FROM outhashes_v2")))


def one_line_error(result, text):
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr


def make_producer(directory, entries, equivs=()):
    """A producer build directory made by a real bitbake-hashserv (as the
    auto server makes cache/hashserv.db) with its sstate objects: entries
    are (taskhash, outhash, unihash, recipe, task) reports, equivs
    (taskhash, unihash) report-equiv calls."""
    os.makedirs(os.path.join(directory, "cache"))
    server = HashServer(os.path.join(directory, "cache"))
    try:
        with contextlib.closing(hashserv.create_client(server.address)) as client:
            for taskhash, outhash, unihash, recipe, task in entries:
                got = client.report_unihash(taskhash, METHOD, outhash, unihash, {"PN": recipe, "task": task})
                unihash = got["unihash"]
                name = "sstate:%s::1.0:r0::12:%s_%s.tar.zst" % (recipe, unihash, task[3:])
                path = os.path.join(directory, "sstate-cache", unihash[:2], unihash[2:4], name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(unihash.encode())
                with open(path + ".siginfo", "wb") as f:
                    f.write(b"sig")
            for taskhash, unihash in equivs:
                client.report_unihash_equiv(taskhash, METHOD, unihash)
    finally:
        server.stop()
    return rows(os.path.join(directory, "cache", "hashserv.db"))


@pytest.fixture
def served(tmp_path):
    server = CacheServer(str(tmp_path / "cache"))
    yield server
    server.stop()


def test_serve_status_and_clean_stop(served, tmp_path):
    result = run("status", served.cache_dir)
    assert result.returncode == 0, result
    for part in ("http mirror", "read endpoint", "write endpoint"):
        assert [line for line in result.stdout.splitlines() if part in line and line.endswith("  up")], result.stdout
    with open(served.log.name) as f:   # serve's start-up lines name every directory the mirror serves
        started = [line for line in f if "http mirror:" in line]
    assert len(started) == 1 and "sstate-cache/, downloads/, siginfo/, sstate-index/" in started[0], started
    assert "sstate-cache     0 objects" in result.stdout
    with urllib.request.urlopen(served.url + "/equivcache.json") as answer:
        doc = json.load(answer)
    assert doc["hashserv"] == [served.hashserv]
    with urllib.request.urlopen(served.url + "/healthz") as answer:   # for a load balancer
        assert json.load(answer) == {"status": "ok", "parts": {"hashserv-write": True, "hashserv-read": True,
                                                                "upload worker": True, "write socket": True,
                                                                "storage": True}}
    admin = os.path.join(served.cache_dir, "server", "admin.json")
    assert os.stat(admin).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(admin)).st_mode & 0o777 == 0o700
    assert served.stop() == 0
    assert not os.path.exists(os.path.join(served.cache_dir, "server", "hashserv.sock"))
    assert not os.path.exists(os.path.join(served.cache_dir, "server", "state.json"))
    with open(os.path.join(served.cache_dir, "server", "serve.log")) as f:
        assert "stopping" in f.read()
    with open(served.log.name) as f:   # all serve printed: its own bitbake-hashserv came up quietly
        printed = f.read()
    assert "serving" in printed and "Error talking to server" not in printed, printed
    assert run("status", served.cache_dir).returncode == 3


def test_refuses_a_live_socket(served):
    result = run("serve", "--http-port", str(free_port()), "--hashserv-port", str(free_port()), served.cache_dir)
    one_line_error(result, "is held by a running server")
    assert run("status", served.cache_dir).returncode == 0


@pytest.mark.parametrize("which", ["--http-port", "--hashserv-port"])
def test_refuses_a_port_in_use(tmp_path, which):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = {"--http-port": free_port(), "--hashserv-port": free_port()}
        ports[which] = busy.getsockname()[1]
        result = run("serve", "--http-port", str(ports["--http-port"]),
                     "--hashserv-port", str(ports["--hashserv-port"]), str(tmp_path / "cache"))
    one_line_error(result, "port 127.0.0.1:%d is in use" % ports[which])


def test_bad_input(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    one_line_error(run("serve", "--frobnicate", str(tmp_path / "c")), "unrecognized arguments: --frobnicate")
    one_line_error(run("serve", "--http-port", "0", str(tmp_path / "c")), "port 0 is not in 1-65535")
    one_line_error(run("serve", str(a_file)), "is not a directory")
    one_line_error(run("serve", str(tmp_path / "no" / "such")), "does not exist")
    one_line_error(run("publish", "--from", str(tmp_path / "nobuild"), str(tmp_path / "c")), "no such build directory")
    os.makedirs(tmp_path / "build")
    one_line_error(run("publish", "--from", str(tmp_path / "build"), str(tmp_path / "c")), "no sstate cache at")
    os.makedirs(tmp_path / "build" / "sstate-cache")
    one_line_error(run("publish", "--from", str(tmp_path / "build"), str(tmp_path / "c")),
                   "no hash equivalence database at")
    one_line_error(run("publish", "--from", str(tmp_path / "build"), "--hashserv-db", str(a_file),
                       str(tmp_path / "c")), "is not a hashserv database")
    one_line_error(run("status", str(tmp_path / "nothing")), "does not exist")
    assert run("--help").returncode == 0 and "publish" in run("--help").stdout


def test_read_and_write_endpoints(served):
    database = os.path.join(served.cache_dir, "hashserv.db")
    with contextlib.closing(hashserv.create_client("unix://" + served.socket[len("unix://"):])) as writer:
        writer.report_unihash(h("t1"), METHOD, h("o1"), h("u1"))
    before = rows(database)
    assert (METHOD, h("t1"), h("u1")) in before[0]

    with contextlib.closing(hashserv.create_client(served.hashserv)) as anonymous:
        assert anonymous.get_unihash(METHOD, h("t1")) == h("u1")
        # A report is answered (a build goes on) but not stored.
        anonymous.report_unihash(h("t2"), METHOD, h("o2"), h("u2"))
        with pytest.raises(bb.asyncrpc.InvokeError):
            anonymous.report_unihash_equiv(h("t3"), METHOD, h("u3"))
    assert rows(database) == before

    admin = served.admin()
    with contextlib.closing(hashserv.create_client(served.hashserv, admin["username"], admin["password"])) as client:
        client.report_unihash(h("t4"), METHOD, h("o4"), h("u4"))
    assert (METHOD, h("t4"), h("u4")) in rows(database)[0]


def entries(prefix, n):
    return [(h(prefix + "t%d" % i), h(prefix + "o%d" % i), h(prefix + "u%d" % i), "recipe%d" % i, "do_populate_sysroot")
            for i in range(n)]


def test_publish_twice_and_while_serving(tmp_path):
    cache_dir = str(tmp_path / "cache")
    database = os.path.join(cache_dir, "hashserv.db")
    # Producer 1: 20 outputs, one more equivalent to the first (same outhash,
    # so the same unihash and object), and one report-equiv.
    first = entries("a", 20)
    first.append((h("a-equivalent"), h("ao0"), h("a-other"), "recipe0", "do_populate_sysroot"))
    uni1, out1 = make_producer(str(tmp_path / "p1"), first, equivs=[(h("a-equiv-only"), h("au5"))])

    result = run("publish", "--from", str(tmp_path / "p1"), cache_dir)
    assert result.returncode == 0, result
    assert "equivalences: 21 output hashes (21 new), 22 unihashes (22 new)" in result.stdout, result.stdout
    assert rows(database) == (uni1, out1)
    assert "sstate index: 40 files (new generation)" in result.stdout, result.stdout
    with open(os.path.join(cache_dir, "index.json"), "rb") as f:
        index = f.read()
    result = run("publish", "--from", str(tmp_path / "p1"), cache_dir)
    assert result.returncode == 0, result
    assert "sstate: 0 files copied (0 B), 40 already present" in result.stdout, result.stdout
    assert "sstate index: 40 files (0 appended)" in result.stdout, result.stdout
    assert "(0 new)" in result.stdout and rows(database) == (uni1, out1)
    with open(os.path.join(cache_dir, "index.json"), "rb") as f:   # not written again: nothing changed
        assert f.read() == index
    # Nothing to merge, and no write endpoint started for it: the cache's database was asked directly.
    assert "(all in the cache's database already: nothing to merge)" in result.stdout, result.stdout
    outhashes, unihashes = read_producer_database(str(tmp_path / "p1" / "cache" / "hashserv.db"))
    assert merged_already(database, outhashes, unihashes)
    assert not merged_already(database, outhashes, {**unihashes, (METHOD, h("at0")): h("elsewhere")})
    assert not merged_already(database, outhashes + [dict(outhashes[0], outhash=h("another"))], unihashes)
    assert not merged_already(database, outhashes, {(METHOD, h("new")): h("new")})
    assert not merged_already("postgresql+asyncpg://hashserv@/hashserv", outhashes, unihashes)

    # Producer 2, published while the cache is served: 10 new outputs, 5
    # already published, and one output the cache has under another unihash.
    second = [(h("b-same-output"), h("ao3"), h("b-own-unihash"), "recipe3", "do_populate_sysroot")]
    second += entries("b", 10) + entries("a", 5)
    uni2, out2 = make_producer(str(tmp_path / "p2"), second)
    server = CacheServer(cache_dir)
    try:
        result = run("publish", "--from", str(tmp_path / "p2"), cache_dir)
        assert result.returncode == 0 and result.stderr == "", result
        assert "equivalences: 16 output hashes (11 new), 16 unihashes (11 new)" in result.stdout, result.stdout
        # b-same-output, and a3 (which producer 2 mapped to b-own-unihash)
        assert "2 taken over by an equivalent output" in result.stdout, result.stdout
        uni, out = rows(database)
        assert out == out1 | out2
        assert uni1 <= uni and {(m, t) for m, t, _ in uni} == {(m, t) for m, t, _ in uni1 | uni2}
        assert len(uni) == len({(m, t) for m, t, _ in uni})     # no duplicate
        with contextlib.closing(hashserv.create_client(server.hashserv)) as consumer:
            assert consumer.get_unihash(METHOD, h("bt7")) == h("bu7")
            # the equivalent output keeps the cache's unihash, whose object is there
            assert consumer.get_unihash(METHOD, h("b-same-output")) == h("au3")
            assert consumer.get_unihash(METHOD, h("at3")) == h("au3")
        with urllib.request.urlopen(server.url + "/index.json") as answer:
            index = json.load(answer)
        # Every object is named by an equivalence: producer 2's object under
        # b-own-unihash, which the cache answers with au3, is dropped.
        assert {o["unihash"] for o in index["objects"] if o["path"]} == {u for _, _, u in uni}
        assert h("b-own-unihash") in {u for _, _, u in uni2} - {u for _, _, u in uni}
        assert "sstate: 2 files dropped: their outputs were in the cache under another unihash" in result.stdout
        for o in index["objects"]:
            with urllib.request.urlopen(urllib.request.Request(
                    server.url + "/sstate-cache/" + urllib.request.quote(o["path"]), method="HEAD")) as answer:
                assert answer.status == 200
        # The sstate index, served: every file of sstate-cache/, the second publish's appended.
        fetched = pathkeys.load(server.url + "/sstate-cache", str(tmp_path / "client"), 5)
        files = list(pathkeys.listed_files(os.path.join(cache_dir, "sstate-cache")))
        assert sorted(fetched.keys) == sorted(pathkeys.key_int(f) for f in files)
        assert "sstate index: %d files (%d appended)" % (len(files), len(files) - 40) in result.stdout, result.stdout
    finally:
        assert server.stop() == 0


@needs_postgresql
def test_postgresql_backend(tmp_path):
    postgres = PostgreSQL(str(tmp_path / "pg"))
    try:
        uni1, out1 = make_producer(str(tmp_path / "p1"), entries("a", 12))
        cache_dir = str(tmp_path / "cache")
        result = run("publish", "--database", postgres.url, "--from", str(tmp_path / "p1"), cache_dir)
        assert result.returncode == 0, result
        assert "equivalences: 12 output hashes (12 new), 12 unihashes (12 new)" in result.stdout, result.stdout
        assert not os.path.exists(os.path.join(cache_dir, "hashserv.db"))
        result = run("publish", "--from", str(tmp_path / "p1"), cache_dir)   # the database is remembered
        assert "(0 new)" in result.stdout and result.returncode == 0, result
        assert postgres.query("SELECT COUNT(*) FROM outhashes_v2") == "12"
        assert postgres.query("SELECT COUNT(*) FROM unihashes_v3") == "12"
        one_line_error(run("publish", "--database", str(tmp_path / "other.db"), "--from", str(tmp_path / "p1"),
                           cache_dir), "a cache keeps one database")
        server = CacheServer(cache_dir)
        try:
            status = run("status", cache_dir)
            assert status.returncode == 0 and "postgresql+asyncpg://hashserv@/hashserv" in status.stdout, status
            assert "unihashes_v3 12" in status.stdout, status.stdout
            with contextlib.closing(hashserv.create_client(server.hashserv)) as consumer:
                for taskhash, _, unihash, _, _ in entries("a", 12):
                    assert consumer.get_unihash(METHOD, taskhash) == unihash
                consumer.report_unihash(h("x"), METHOD, h("y"), h("z"))
            assert postgres.query("SELECT COUNT(*) FROM outhashes_v2") == "12"
        finally:
            assert server.stop() == 0
    finally:
        postgres.stop()


def test_production_configs(tmp_path):
    result = run("config", "--nginx", "--public-host", "cache.example.com", str(tmp_path / "cache"))
    assert result.returncode == 0, result
    for text in ("server_name cache.example.com;", "root %s;" % (tmp_path / "cache"), "listen 8080;",
                 "autoindex off;", "return 405;", "location /sstate-cache/", "location = /equivcache.json"):
        assert text in result.stdout
    result = run("config", "--systemd", str(tmp_path / "cache"))
    assert result.returncode == 0, result
    assert result.stdout.count("[Service]") == 4
    assert "OnCalendar=daily" in result.stdout and "Type=oneshot" in result.stdout
    assert "equivcache-server --bitbake %s gc %s\n" % (os.path.join(POKY_DIR, "bitbake"), tmp_path / "cache") \
        in result.stdout, result.stdout
    assert "--anon-perms @read --log WARNING --admin-user admin" in result.stdout
    assert "--bind unix://%s/server/hashserv.sock" % (tmp_path / "cache") in result.stdout
    assert "EnvironmentFile=%s/server/admin.env" % (tmp_path / "cache") in result.stdout
    one_line_error(run("config", str(tmp_path / "cache")), "one of the arguments --nginx --systemd is required")


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None or os.getuid() == 0,
                    reason="needs nginx (Debian package nginx-light) and a user other than root")
def test_nginx_site_serves_the_mirror(tmp_path):
    """config --nginx, run by a real nginx on loopback: the published names only, GET and HEAD only."""
    cache_dir = tmp_path / "cache"
    for rel, content in (("equivcache.json", b"{}"), ("sstate-cache/ad/72/sstate:a::1:r0::12:ad72_x.tar.zst", b"o" * 1000),
                         ("hashserv.db", b"secret"), ("server/admin.json", b"secret")):
        (cache_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache_dir / rel).write_bytes(content)
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(str(tmp_path / "outside"), str(cache_dir / "sstate-cache" / "escape"))
    port = free_port()
    site = run("config", "--nginx", "--bind", "127.0.0.1", "--http-port", str(port), str(cache_dir))
    assert site.returncode == 0, site
    assert "listen 127.0.0.1:%d;" % port in site.stdout
    nginx = Nginx(str(tmp_path), site.stdout, port)
    try:
        def status(path, method="GET", headers=None):
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(req) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        obj = "/sstate-cache/ad/72/sstate:a::1:r0::12:ad72_x.tar.zst"
        assert status(obj) == (200, b"o" * 1000)
        assert status(obj, "HEAD")[0] == 200
        assert status(obj, headers={"Range": "bytes=10-19"}) == (206, b"o" * 10)
        assert status("/equivcache.json")[0] == 200
        for path in ("/hashserv.db", "/server/admin.json", "/sstate-cache/escape", "/sstate-cache/../hashserv.db"):
            code, body = status(path)
            assert code in (403, 404) and b"secret" not in body, path
        assert status("/equivcache.json", "PUT")[0] == 405
        assert status("/sstate-cache/", "GET")[0] in (403, 404)

        # The sstate index through nginx: fetched, then caught up with a byte range.
        from equivcache import pathkeys
        from equivcache.server.store.local import update_sstate_index
        index_dir = str(cache_dir / "sstate-index")
        update_sstate_index(str(cache_dir))
        root, client = "http://127.0.0.1:%d/sstate-cache" % port, str(tmp_path / "client")
        assert pathkeys.load(root, client, 2).requests == 2
        (cache_dir / "sstate-cache" / "ad" / "72" / "new").write_bytes(b"n")
        update_sstate_index(str(cache_dir))
        caught_up = pathkeys.load(root, client, 2)
        assert caught_up.requests == 2 and pathkeys.key_int("ad/72/new") in set(caught_up.keys)
        assert caught_up.received == os.path.getsize(os.path.join(index_dir, "head.json")) + pathkeys.KEY_SIZE
    finally:
        nginx.stop()
