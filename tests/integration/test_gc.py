# SPDX-License-Identifier: MIT
#
# equivcache-server gc and check on published caches, with the real
# bitbake-hashserv (SQLite, and a real PostgreSQL server): eviction by size
# and by age, the indexes rewritten first, equivalences kept for the grace
# period then swept through hashserv's gc-mark/gc-sweep, SIGKILL at every
# phase, a download under way while its object goes, a publish and a gc
# taking turns.

import fcntl
import http.client
import json
import os
import subprocess
import sys
import shutil
import time

import pytest

from conftest import need_bitbake, needs_postgresql
from oeqa.utils.equivcache import SERVER, CacheServer, wait_for
from oeqa.utils.equivcache_services import PostgreSQL

need_bitbake()

from equivcache import pathkeys  # noqa: E402
from equivcache.server.hashequiv.processes import socket_alive  # noqa: E402
from test_server import entries, make_producer, rows, run  # noqa: E402

DAY = 86400
GROUP = 64 + 3   # make_producer's object (its unihash) and .siginfo ("sig")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A cache published once for the module (copies of a cache use their own database)."""
    return publish_new(tmp_path_factory.mktemp("template"))


def publish_new(directory, *extra):
    make_producer(str(directory / "p"), entries("a", 6))
    cache = str(directory / "cache")
    result = run("publish", *extra, "--from", str(directory / "p"), cache)
    assert result.returncode == 0, result
    return cache


def aged(cache):
    """Each recipe i of the cache published and last used 6-i days ago, the
    oldest first (so no longer protected as the last publish's)."""
    for i in range(6):
        age(cache, "recipe%d" % i, 6 - i)
    return cache


@pytest.fixture
def cache(template, tmp_path):
    copy = str(tmp_path / "cache")
    shutil.copytree(template, copy)
    return copy


def age(cache, recipe, days):
    when = time.time() - days * DAY
    for top, _, names in os.walk(os.path.join(cache, "sstate-cache")):
        for name in names:
            if name.startswith("sstate:%s:" % recipe):
                os.utime(os.path.join(top, name), (when, when))


def recipes_on_mirror(cache):
    with open(os.path.join(cache, "index.json")) as f:
        return {o["recipe"] for o in json.load(f)["objects"] if o["path"]}


def recipes_in_sstate(cache):
    found = set()
    for _, _, names in os.walk(os.path.join(cache, "sstate-cache")):
        found |= {n.split(":")[1] for n in names if n.startswith("sstate:")}
    return found


def index_keys(cache):
    head, journal = pathkeys.read_local(os.path.join(cache, "sstate-index"))
    return head, set(pathkeys.keys_of(journal))


def file_keys(cache):
    return {pathkeys.key_int(p) for p in pathkeys.listed_files(os.path.join(cache, "sstate-cache"))}


def unihashes_of(recipes):
    return {u for t, o, u, r, _ in entries("a", 6) if r in recipes}


def row_unihashes(cache):
    return {u for _, _, u in rows(os.path.join(cache, "hashserv.db"))[0]}


def gc(cache, *args, env=None):
    return subprocess.run([sys.executable, SERVER, "gc", *args, cache], capture_output=True, text=True,
                          timeout=120, env=env)


def test_gc_by_size_then_age_then_grace(cache):
    aged(cache)
    everything = {"recipe%d" % i for i in range(6)}
    before = (recipes_on_mirror(cache), index_keys(cache))

    # A dry run says what would go (the two least recently used) and changes nothing.
    result = gc(cache, "--max-size", str(4 * GROUP), "--dry-run")
    assert result.returncode == 0, result
    assert "would remove: 2 of 6 objects (134 B of 402 B)" in result.stdout, result.stdout
    assert [l for l in result.stdout.splitlines() if "sstate:recipe" in l][0].split("sstate:")[1].startswith("recipe0:")
    assert (recipes_on_mirror(cache), index_keys(cache)) == before and recipes_in_sstate(cache) == everything
    assert "gc" not in json.load(open(os.path.join(cache, "server", "server.json")))

    # By size: the least recently used go, with the index entries; their equivalences stay (grace period).
    result = gc(cache, "--max-size", str(4 * GROUP))
    assert result.returncode == 0, result
    assert "2 of 6 objects (134 B of 402 B) and 0 signature files go" in result.stdout, result.stdout
    assert "gc: 4 objects, 268 B kept" in result.stdout
    assert recipes_in_sstate(cache) == recipes_on_mirror(cache) == everything - {"recipe0", "recipe1"}
    head, keys = index_keys(cache)
    assert head["generation"] != before[1][0]["generation"] and keys == file_keys(cache)
    assert "none removed yet" in result.stdout, result.stdout
    assert row_unihashes(cache) == unihashes_of(everything)
    assert run("check", cache).returncode == 0

    # By age, with the bound remembered: --older-than alone replaces it.
    result = gc(cache, "--older-than", "3.5")
    assert result.returncode == 0, result
    assert recipes_in_sstate(cache) == recipes_on_mirror(cache) == {"recipe3", "recipe4", "recipe5"}
    assert json.load(open(os.path.join(cache, "server", "server.json")))["gc"]["older_than"] == 3.5

    # Grace period over: equivalences whose objects went are swept, those of kept objects stay.
    result = gc(cache, "--grace-days", "0")
    assert result.returncode == 0, result
    assert "3 removed" in result.stdout and "3 rows kept" in result.stdout, result.stdout
    assert row_unihashes(cache) == unihashes_of({"recipe3", "recipe4", "recipe5"})
    check = run("check", cache)
    assert check.returncode == 0 and "3 objects with their equivalences, consistent" in check.stdout, check
    status = run("status", cache)
    assert "gc bound         evicts what is unused for 3.5 days" in status.stdout, status.stdout


def test_protection_use_and_bad_input(cache):
    # Everything came with the last publish: protected by default, over the bound says so.
    result = gc(cache, "--max-size", "100")
    assert result.returncode == 0, result
    assert "0 of 6 objects" in result.stdout and "6 protected" in result.stdout, result.stdout
    assert "over the bound: the rest is protected" in result.stdout
    # A download is a use: the oldest, once fetched from the mirror, outlives the others.
    server = CacheServer(cache)
    try:
        with open(os.path.join(cache, "index.json")) as f:
            path = [o["path"] for o in json.load(f)["objects"] if o["recipe"] == "recipe0"][0]
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        connection.request("GET", "/sstate-cache/" + path)
        assert connection.getresponse().read()
        connection.close()
    finally:
        server.stop()
    result = gc(cache, "--max-size", str(GROUP), "--keep-publishes", "0")
    assert result.returncode == 0, result
    assert recipes_in_sstate(cache) == {"recipe0"}, result.stdout
    status = run("status", cache)
    assert "gc bound         67 B of 67 B (100%)" in status.stdout, status.stdout
    for args, text in [(("--max-size", "lots"), "'lots' is not a size"), (("--older-than", "-1"), "not a duration"),
                       (("--max-size", "1G", "--keep-publishes", "-1"), "not a count")]:
        result = gc(cache, *args)
        assert result.returncode == 2 and text in result.stderr and result.stdout == "", result
    result = gc(os.path.join(os.path.dirname(cache), "nowhere"), "--max-size", "1G")
    assert result.returncode == 2 and "not a cache directory" in result.stderr, result
    os.remove(os.path.join(cache, "server", "server.json"))
    result = gc(cache)
    assert result.returncode == 2 and "no bound: pass --max-size or --older-than" in result.stderr, result


@pytest.mark.parametrize("phase", ["plan:1", "ledger:1", "index:1", "delete:1", "delete:2", "mark:1", "sweep:1"])
def test_killed_at_every_phase(cache, phase):
    """SIGKILL at each phase: nothing is inconsistent, no private endpoint is left, the next gc finishes the work."""
    aged(cache)
    env = dict(os.environ, EQUIVCACHE_GC_TEST_KILL=phase)
    result = gc(cache, "--max-size", str(3 * GROUP), "--grace-days", "0", env=env)
    assert result.returncode == -9, result
    private = os.path.join(cache, "server")
    wait_for(lambda: not any(socket_alive(os.path.join(private, s)) for s in os.listdir(private)
                             if s.endswith(".sock")), 10, "the private hashserv outlived gc")
    check = run("check", cache)
    assert check.returncode == 0, check
    assert recipes_on_mirror(cache) <= recipes_in_sstate(cache)
    assert row_unihashes(cache) >= unihashes_of(recipes_in_sstate(cache))
    result = gc(cache)   # the remembered bound
    assert result.returncode == 0, result
    assert recipes_in_sstate(cache) == recipes_on_mirror(cache) == {"recipe3", "recipe4", "recipe5"}
    assert row_unihashes(cache) == unihashes_of({"recipe3", "recipe4", "recipe5"})


def test_publish_turns_and_download_under_way(cache):
    """gc waits for a publish; an object removed during its download arrives whole, then 404."""
    aged(cache)
    server = CacheServer(cache)
    try:
        # While a publish holds the lock, gc waits and changes nothing.
        with open(os.path.join(cache, "server", "publish.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            age(cache, "recipe1", 30)
            waiting = subprocess.Popen([sys.executable, SERVER, "gc", "--older-than", "10", cache],
                                       stdout=subprocess.PIPE, text=True)
            line = waiting.stdout.readline()
            assert "waiting for the publish or gc under way" in line, line
            assert "recipe1" in recipes_in_sstate(cache) and waiting.poll() is None
        assert waiting.wait(60) == 0
        assert recipes_in_sstate(cache) == {"recipe0", "recipe2", "recipe3", "recipe4", "recipe5"}

        with open(os.path.join(cache, "index.json")) as f:
            path = [o["path"] for o in json.load(f)["objects"] if o["recipe"] == "recipe0"][0]
        big = os.urandom(16 << 20)
        target = os.path.join(cache, "sstate-cache", path)
        with open(target, "wb") as f:
            f.write(big)
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        connection.request("GET", "/sstate-cache/" + path)
        answer = connection.getresponse()
        first = answer.read(4096)    # the server is blocked in sendfile: we read slowly
        result = gc(cache, "--max-size", "0", "--keep-publishes", "0")
        assert result.returncode == 0, result
        assert not os.path.exists(target) and recipes_in_sstate(cache) == set(), result.stdout
        assert first + answer.read() == big
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        connection.request("GET", "/sstate-cache/" + path)
        assert connection.getresponse().status == 404
        assert run("check", cache).returncode == 0
    finally:
        assert server.stop() == 0


@needs_postgresql
def test_gc_postgresql(tmp_path):
    postgres = PostgreSQL(str(tmp_path / "pg"))
    try:
        cache = aged(publish_new(tmp_path, "--database", postgres.url))
        result = gc(cache, "--max-size", str(3 * GROUP), "--grace-days", "0",
                    env=dict(os.environ, EQUIVCACHE_GC_TEST_KILL="mark:1"))
        assert result.returncode == -9, result
        assert postgres.query("SELECT COUNT(*) FROM unihashes_v3") == "6"
        result = gc(cache)
        assert result.returncode == 0 and "3 removed" in result.stdout, result
        assert recipes_in_sstate(cache) == recipes_on_mirror(cache) == {"recipe3", "recipe4", "recipe5"}
        kept = set(postgres.query("SELECT unihash FROM unihashes_v3").split())
        assert kept == unihashes_of({"recipe3", "recipe4", "recipe5"})
        assert run("check", cache).returncode == 0
        postgres.query("DELETE FROM unihashes_v3 WHERE unihash = '%s'" % sorted(kept)[0])
        check = run("check", cache)
        assert check.returncode == 1 and "has no equivalence in the database" in check.stdout, check
    finally:
        postgres.stop()


@needs_postgresql
def test_state_in_postgresql(tmp_path):
    """A cache whose database is PostgreSQL keeps its whole state there: gc's ledger, the last publishes, tokens,
    settings, admin credentials; nothing of it in CACHE_DIR/server. The publish/gc lock is an advisory lock: a gc
    waits for its holder (another replica), then runs. A cache whose database was PostgreSQL before brings what
    its directory held into it, once, and loses nothing."""
    from equivcache.server.store.shared import SharedState
    postgres = PostgreSQL(str(tmp_path / "pg"))
    try:
        cache = publish_new(tmp_path, "--database", postgres.url)
        token = run("token", "add", "ci-1", cache)
        assert token.returncode == 0, token
        # What the producer's database names: its unihashes and the task hashes of its outputs.
        published = postgres.query("SELECT COUNT(*) FROM (SELECT unihash FROM unihashes_v3 UNION "
                                   "SELECT taskhash FROM outhashes_v2) AS named")
        assert postgres.query("SELECT COUNT(*) FROM equivcache_seen") == published != "0"
        assert postgres.query("SELECT COUNT(*) FROM equivcache_publish_starts") == "1"
        assert postgres.query("SELECT name FROM equivcache_tokens") == "ci-1"
        assert json.loads(postgres.query("SELECT doc FROM equivcache_tokens"))["sha256"] not in token.stdout
        assert set(postgres.query("SELECT name FROM equivcache_settings").split()) >= {"cache", "config", "admin"}
        assert set(os.listdir(os.path.join(cache, "server"))) & {
            "tokens.json", "gc-ledger.db", "publishes.json", "admin.json", "publish.lock"} == set()

        state = SharedState(postgres.url)
        with state.lock(cache):
            waiting = subprocess.Popen([sys.executable, SERVER, "gc", "--max-size", "1G", cache],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert "waiting for the publish or gc under way" in waiting.stdout.readline()
            time.sleep(0.5)
            assert waiting.poll() is None
        assert waiting.wait(60) == 0, waiting.stdout.read()

        # An older cache on PostgreSQL: its tokens, ledger and settings were files in server/.
        postgres.query("CREATE DATABASE older")
        older = str(tmp_path / "older")
        os.makedirs(str(tmp_path / "s"))
        shutil.copytree(publish_new(tmp_path / "s"), older)
        assert run("token", "add", "ci-2", older).returncode == 0
        with open(os.path.join(older, "server", "server.json"), "w") as f:
            json.dump({"database": postgres.url.replace("/hashserv?", "/older?"), "gc": {"max_size": 123}}, f)
        listed = run("token", "list", older)
        assert listed.returncode == 0 and listed.stdout.startswith("ci-2 "), listed
        older_db = ["psql", "-h", postgres.directory, "-U", "hashserv", "-At", "older", "-c"]
        assert subprocess.run(older_db + ["SELECT COUNT(*) FROM equivcache_seen"], capture_output=True,
                              text=True).stdout.strip() == published
        assert '"max_size": 123' in subprocess.run(older_db + ["SELECT value FROM equivcache_settings WHERE "
                                                               "name = 'config'"], capture_output=True, text=True).stdout
    finally:
        postgres.stop()
