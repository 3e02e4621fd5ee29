# SPDX-License-Identifier: MIT
#
# Remote producers, against a real equivcache-server serve on loopback and
# its real bitbake-hashserv: producer tokens, publish --to (once, twice, and
# three producers at once with gc running), an upload cut off by SIGKILL,
# every bad input refused with nothing written, and what each token (or
# none) may do on the hash server.

import base64
import contextlib
import filecmp
import glob
import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.parse

import pytest

from conftest import POKY_DIR, need_bitbake
from oeqa.utils.equivcache import SERVER, CacheServer, free_port, wait_for
from oeqa.utils.equivcache_services import Nginx

need_bitbake()

import bb.asyncrpc  # noqa: E402
import hashserv  # noqa: E402
from test_server import METHOD, h, make_producer, rows  # noqa: E402

H = "ad72a9d42a35b1c5dbeee1b2065efbca91dc6b95bb2ea5ed000f89761962869c"
OBJECT = "sstate-cache/ad/72/sstate:r::1.0:r0::12:%s_populate_sysroot.tar.zst" % H


def run(*args, timeout=120):
    return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, timeout=timeout)


def add_token(cache_dir, name, role="producer"):
    result = run("token", "add", name, cache_dir, "--role", role)
    assert result.returncode == 0, result
    return result.stdout.strip()


def write_token(tmp_path, line):
    path = tmp_path / ("%s.token" % line.split(":")[0])
    path.write_text(line + "\n")
    os.chmod(path, 0o600)
    return str(path)


def cache_files(cache_dir):
    """Every file under the cache's public areas, hidden ones included."""
    found = set()
    for area in ("sstate-cache", "downloads", "siginfo"):
        for top, _, names in os.walk(os.path.join(cache_dir, area)):
            found |= {os.path.relpath(os.path.join(top, n), cache_dir) for n in names}
    return found


def request(server, method, path, body=b"", token=None, headers=None):
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    headers.setdefault("Content-Length", str(len(body)))
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def put(server, rel, body, token, sha256=None, headers=None):
    extra = {"X-Equivcache-SHA256": sha256 or hashlib.sha256(body).hexdigest()}
    extra.update(headers or {})
    return request(server, "PUT", "/upload/v1/" + urllib.parse.quote(rel), body, token, extra)


@pytest.fixture
def served(tmp_path):
    cache_dir = str(tmp_path / "cache")
    server = CacheServer(cache_dir, extra=("--max-upload-size", "64K"))
    yield server
    server.stop()


def test_uploads_off_without_a_producer_token(served):
    assert put(served, OBJECT, b"x", None)[0] == 405
    assert request(served, "POST", "/upload/v1/missing", b"{}")[0] == 405
    assert cache_files(served.cache_dir) == set()


def test_token_add_list_revoke(served, tmp_path):
    line = add_token(served.cache_dir, "ci-1")
    name, secret = line.split(":")
    assert name == "ci-1" and len(secret) >= 32
    store = os.path.join(served.cache_dir, "server", "tokens.json")
    assert os.stat(store).st_mode & 0o777 == 0o600
    with open(store) as f:
        text = f.read()
    assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() in text
    # Its hashserv user: @read @report, as the cache's admin sees it.
    admin = served.admin()
    with contextlib.closing(hashserv.create_client(served.hashserv, admin["username"], admin["password"])) as c:
        assert sorted(c.get_user("ci-1")["permissions"]) == ["@read", "@report"]
    assert run("token", "add", "ci-1", served.cache_dir).returncode == 2   # exists
    listed = run("token", "list", served.cache_dir)
    assert listed.returncode == 0 and "ci-1" in listed.stdout and "active" in listed.stdout, listed
    assert put(served, OBJECT, b"x", line)[0] == 201
    add_token(served.cache_dir, "ci-2")   # the endpoint stays on
    revoked = run("token", "revoke", "ci-1", served.cache_dir)
    assert revoked.returncode == 0, revoked
    assert put(served, OBJECT, b"y", line)[0] == 401   # at once, in the running server
    with contextlib.closing(hashserv.create_client(served.hashserv, admin["username"], admin["password"])) as c:
        assert c.get_user("ci-1") is None
    assert "revoked" in run("token", "list", served.cache_dir).stdout
    one = run("token", "add", "bad name!", served.cache_dir)
    assert one.returncode == 2 and one.stderr.count("\n") == 1 and "token name" in one.stderr


def test_remote_publish_twice(served, tmp_path):
    producer = str(tmp_path / "producer")
    entries = [(h("a%d" % i), h("oa%d" % i), h("ua%d" % i), "a", "do_populate_sysroot") for i in range(3)]
    unis, outs = make_producer(producer, entries)
    os.makedirs(os.path.join(producer, "downloads"))
    with open(os.path.join(producer, "downloads", "a-1.0.tar.gz"), "wb") as f:
        f.write(b"source")
    token = write_token(tmp_path, add_token(served.cache_dir, "ci-1"))
    first = run("publish", "--from", producer, "--to", served.url, "--token-file", token)
    assert first.returncode == 0, first
    assert "sstate: 6 files uploaded" in first.stdout and "downloads: 1 files uploaded" in first.stdout, first.stdout
    # The cache merged them (one request): the token went to no hash server.
    assert "equivalences: 3 output hashes, 3 unihashes merged by the cache at %s for ci-1" % served.url \
        in first.stdout, first.stdout
    assert rows(os.path.join(served.cache_dir, "hashserv.db"))[0] >= unis
    assert os.path.isfile(os.path.join(served.cache_dir, "downloads", "a-1.0.tar.gz"))
    with open(os.path.join(served.cache_dir, "index.json")) as f:
        assert len([o for o in json.load(f)["objects"] if o["path"]]) == 3
    second = run("publish", "--from", producer, "--to", served.url, "--token-file", token)
    assert second.returncode == 0, second
    assert "sstate: 0 files uploaded (0 B), 6 already present" in second.stdout, second.stdout
    assert "downloads: 0 files uploaded" in second.stdout
    check = run("check", served.cache_dir)
    assert check.returncode == 0 and "consistent" in check.stdout, check


def test_three_producers_at_once_with_gc(served, tmp_path):
    """Different recipes, and one overlapping recipe with an equivalent
    change (its own task hash and unihash, the same output) in each."""
    producers = []
    for n in range(3):
        entries = [(h("r%d-%d" % (n, i)), h("o%d-%d" % (n, i)), h("u%d-%d" % (n, i)), "r%d" % n, "do_install")
                   for i in range(30)]
        entries.append((h("shared-%d" % n), h("shared-output"), h("shared-uni-%d" % n), "shared", "do_install"))
        directory = str(tmp_path / ("producer%d" % n))
        make_producer(directory, entries)
        producers.append((directory, entries, write_token(tmp_path, add_token(served.cache_dir, "ci-%d" % n))))
    publishes = [subprocess.Popen([sys.executable, SERVER, "publish", "--from", d, "--to", served.url,
                                   "--token-file", t], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for d, _, t in producers]
    gcs = 0
    while any(p.poll() is None for p in publishes):
        result = run("gc", "--max-size", "1G", served.cache_dir)
        assert result.returncode == 0, result
        gcs += 1
    assert gcs >= 1
    for p in publishes:
        assert p.wait() == 0, p.stdout.read()
    check = run("check", served.cache_dir)
    assert check.returncode == 0 and "consistent" in check.stdout, check
    with open(os.path.join(served.cache_dir, "index.json")) as f:
        objects = [o for o in json.load(f)["objects"] if o["path"]]
    # The overlapping recipe's objects: one, under the unihash the server kept.
    assert len(objects) == len({o["path"] for o in objects}) == 91
    with open(os.path.join(served.cache_dir, "sstate-index", "head.json")) as f:
        head = json.load(f)
    with open(os.path.join(served.cache_dir, "sstate-index", head["journal"]), "rb") as f:
        keys = f.read()[:8 * head["entries"]]
    assert len(set(keys[i:i + 8] for i in range(0, len(keys), 8))) == head["entries"] == 182
    # Every producer's task hash has a unihash whose object the cache holds; the
    # overlapping recipe's three task hashes share one unihash.
    present = {o["unihash"] for o in objects}
    shared = set()
    with contextlib.closing(hashserv.create_client(served.hashserv)) as client:
        for _, entries, _ in producers:
            for taskhash, _, _, recipe, _ in entries:
                unihash = client.get_unihash(METHOD, taskhash)
                assert unihash in present, (recipe, taskhash)
                if recipe == "shared":
                    shared.add(unihash)
    assert len(shared) == 1
    assert not [f for f in cache_files(served.cache_dir) if os.path.basename(f).startswith(".")]


def test_killed_client_leaves_no_partial_file(served, tmp_path):
    line = add_token(served.cache_dir, "ci-1")
    body = os.urandom(48 << 10)
    parsed = urllib.parse.urlsplit(served.url)
    script = (
        "import base64, socket, sys, time\n"
        "s = socket.create_connection((%r, %d))\n"
        "s.sendall(b'PUT /upload/v1/%s HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n'\n"
        "          b'X-Equivcache-SHA256: %s\\r\\nAuthorization: Basic %s\\r\\n\\r\\n')\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "print('sent', flush=True)\n"
        "time.sleep(600)\n" % (parsed.hostname, parsed.port, urllib.parse.quote(OBJECT), len(body),
                               hashlib.sha256(body).hexdigest(), base64.b64encode(line.encode()).decode()))
    client = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    client.stdin.write(body[:len(body) // 2])
    client.stdin.close()
    assert client.stdout.readline().strip() == b"sent"
    directory = os.path.join(served.cache_dir, os.path.dirname(OBJECT))
    wait_for(lambda: glob.glob(os.path.join(directory, ".upload-*")), 30, "no temporary file of the upload")
    client.send_signal(signal.SIGKILL)
    client.wait()
    wait_for(lambda: not glob.glob(os.path.join(directory, ".upload-*")), 30, "the temporary file stayed")
    assert cache_files(served.cache_dir) == set()
    # The same object, whole, is taken afterwards.
    assert put(served, OBJECT, body, line)[0] == 201
    with open(os.path.join(served.cache_dir, OBJECT), "rb") as f:
        assert f.read() == body


BAD_PATHS = [
    "../outside", "sstate-cache/../../outside", "/etc/passwd", "sstate-cache/ad/72/x.tar.zst",
    "sstate-cache/ff/72/sstate:r::1.0:r0::12:%s_populate_sysroot.tar.zst" % H, "server/tokens.json",
    "index.json", "downloads/git2/github.com.x", "downloads/a.tar.gz.lock", "downloads/.hidden",
    "siginfo/x86_64-linux/r/notsig", "sstate-cache/ad/72/sstate:r::1.0:r0::12:%s_x.tar.zst/../../x" % H,
]


def test_bad_paths_refused(served):
    line = add_token(served.cache_dir, "ci-1")
    for path in BAD_PATHS:
        status, body = put(served, path, b"data", line)
        assert status == 400, (path, status, body)
        missing = request(served, "POST", "/upload/v1/missing", json.dumps({"files": [[path, 4]]}).encode(), line)
        assert missing[0] == 400, (path, missing)
    assert cache_files(served.cache_dir) == set()
    assert not os.path.exists(os.path.join(os.path.dirname(served.cache_dir), "outside"))


def test_bad_uploads_refused(served, tmp_path):
    line = add_token(served.cache_dir, "ci-1")
    reader = add_token(served.cache_dir, "viewer", role="reader")
    name, secret = line.split(":")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(served.cache_dir, "sstate-cache", "ad"))
    cases = {
        "symlink": (put(served, OBJECT, b"data", line), 400),
        "oversize": (put(served, OBJECT, b"", line,
                         headers={"Content-Length": str(65 << 10)}), 413),
        "no token": (put(served, OBJECT, b"data", None), 401),
        "wrong secret": (put(served, OBJECT, b"data", name + ":" + secret[::-1]), 401),
        "unknown name": (put(served, OBJECT, b"data", "nobody:" + secret), 401),
        "reader": (put(served, OBJECT, b"data", reader), 403),
        "no hash": (request(served, "PUT", "/upload/v1/" + OBJECT, b"data", line), 400),
    }
    os.unlink(os.path.join(served.cache_dir, "sstate-cache", "ad"))
    cases["wrong hash"] = (put(served, OBJECT, b"data", line, sha256="0" * 64), 422)
    for what, ((status, body), expected) in cases.items():
        assert status == expected, (what, status, body)
    # A refusal closes the connection, and says so (a proxy sends no other request on it).
    parsed = urllib.parse.urlsplit(served.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("PUT", "/upload/v1/" + urllib.parse.quote(OBJECT), body=b"data", headers={
            "Authorization": "Basic " + base64.b64encode(("nobody:" + secret).encode()).decode()})
        answer = connection.getresponse()
        answer.read()
        assert (answer.status, answer.getheader("Connection")) == (401, "close")
    finally:
        connection.close()
    assert cache_files(served.cache_dir) == set()
    assert os.listdir(str(outside)) == []


def batch_body(entries):
    """A batch request's body of (path, data[, manifest fields that differ]) entries: the manifest, then the data."""
    manifest = [dict({"path": e[0], "size": len(e[1]), "sha256": hashlib.sha256(e[1]).hexdigest()},
                     **(e[2] if len(e) > 2 else {})) for e in entries]
    head = json.dumps(manifest).encode()
    return len(head).to_bytes(4, "big") + head + b"".join(e[1] for e in entries)


def test_batches(served):
    """Many files in one request, each stored as a PUT stores it; a bad batch is refused whole before any file
    is read, and a file whose hash is wrong stops the batch there: what came before it stays, nothing after."""
    line = add_token(served.cache_dir, "ci-1")
    other = OBJECT.replace("sstate:r::", "sstate:s::")
    download = "downloads/b.tar.gz"
    status, body = request(served, "POST", "/upload/v1/batch", batch_body([(OBJECT, b"one"), (download, b"two")]),
                           line)
    assert (status, json.loads(body)) == (200, {"stored": 2, "present": 0, "stored_bytes": 6})
    assert cache_files(served.cache_dir) == {OBJECT, download}
    with open(os.path.join(served.cache_dir, download), "rb") as f:
        assert f.read() == b"two"
    status, body = request(served, "POST", "/upload/v1/batch", batch_body([(OBJECT, b"one")]), line)
    assert (status, json.loads(body)) == (200, {"stored": 0, "present": 1, "stored_bytes": 0})
    refused = {
        "bad path": (batch_body([("sstate-cache/../x", b"1")]), 400),
        "length": (batch_body([(other, b"1")])[:-1], 400),
        "over the limit": (batch_body([(other, b"x" * (65 << 10))]), 400),
        "manifest": (b"\0\0\0\2{}", 400),
        "wrong hash": (batch_body([(other, b"1", {"sha256": "0" * 64})]), 422),
    }
    for what, (body, expected) in refused.items():
        assert request(served, "POST", "/upload/v1/batch", body, line)[0] == expected, what
    assert request(served, "POST", "/upload/v1/batch", batch_body([(other, b"1")]), None)[0] == 401
    assert cache_files(served.cache_dir) == {OBJECT, download}
    third = "downloads/c.tar.gz"
    body = batch_body([(third, b"3"), (other, b"1", {"sha256": "0" * 64}), ("downloads/d.tar.gz", b"4")])
    assert request(served, "POST", "/upload/v1/batch", body, line)[0] == 422
    assert cache_files(served.cache_dir) == {OBJECT, download, third}


def test_batch_of_held_and_streamed_files(served, tmp_path, monkeypatch):
    """publish's batch: small files read once and sent joined, while they fit in what it holds; larger
    ones, and those past it, read as sent. The cache stores each whole."""
    from equivcache.server.producer import connection
    monkeypatch.setattr(connection, "BLOCK", 4096)
    monkeypatch.setattr(connection, "HELD_BYTES", 10000)
    items = []
    for n, size in enumerate([100, 5000, 3000, 0, 3000, 3000, 2500, 9000, 50]):   # held: 100, 3000, 0, 3000, 3000, 50
        path = tmp_path / ("f%d.tar.gz" % n)
        path.write_bytes(os.urandom(size))
        items.append(("downloads/f%d.tar.gz" % n, str(path), size, None))
    name, secret = add_token(served.cache_dir, "ci-1").split(":")
    with contextlib.closing(connection.Upload(served.url, name, secret)) as upload:
        assert upload.batch(items) == (9, 25650)
    for rel, path, _, _ in items:
        assert filecmp.cmp(os.path.join(served.cache_dir, rel), path, shallow=False), rel


def test_upload_worker(served):
    """serve's upload worker takes the uploads; killed, it shows in /healthz (503), and uploads are served
    by serve itself, whole."""
    line = add_token(served.cache_dir, "ci-1")
    status, body = request(served, "GET", "/healthz")
    assert status == 200 and json.loads(body)["parts"]["upload worker"] is True, body
    with open("/proc/%d/task/%d/children" % (served.process.pid, served.process.pid)) as f:
        children = [int(pid) for pid in f.read().split()]
    workers = []
    for pid in children:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"bitbake-hashserv" not in f.read():
                workers.append(pid)
    assert len(workers) == 1, children
    assert put(served, OBJECT, b"one", line)[0] == 201
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: request(served, "GET", "/healthz")[0] == 503, 10, "/healthz did not see the worker gone")
    assert json.loads(request(served, "GET", "/healthz")[1])["parts"]["upload worker"] is False
    other = OBJECT.replace("sstate:r::", "sstate:s::")
    assert put(served, other, b"two", line)[0] == 201
    with open(os.path.join(served.cache_dir, other), "rb") as f:
        assert f.read() == b"two"


def test_hashserv_permissions_of_tokens(served, tmp_path):
    producer = add_token(served.cache_dir, "ci-1").split(":")
    reader = add_token(served.cache_dir, "viewer", role="reader").split(":")
    report = (h("t"), METHOD, h("o"), h("u"), {})
    database = os.path.join(served.cache_dir, "hashserv.db")
    for user in (None, reader):
        args = (served.hashserv,) + (tuple(user) if user else ())
        with contextlib.closing(hashserv.create_client(*args)) as client:
            client.report_unihash(*report)   # answered (a build goes on), not stored
            with pytest.raises(bb.asyncrpc.InvokeError):
                client.report_unihash_equiv(h("t2"), METHOD, h("u2"))
        assert rows(database) == (set(), set()), user
    with contextlib.closing(hashserv.create_client(served.hashserv, *producer)) as client:
        assert client.report_unihash(*report)["unihash"] == h("u")
    unis, _ = rows(database)
    assert (METHOD, h("t"), h("u")) in unis


def test_equivalences_merged_by_the_cache(served):
    """POST /upload/v1/equivalences: a producer token's entries, checked, merged through the write endpoint the
    way publish merges a local producer's; an output the cache has keeps its unihash; a bad entry, a reader or
    no token is refused with nothing merged."""
    line = add_token(served.cache_dir, "ci-1")
    reader = add_token(served.cache_dir, "viewer", role="reader")
    database = os.path.join(served.cache_dir, "hashserv.db")

    def post(doc, token=line):
        status, body = request(served, "POST", "/upload/v1/equivalences", json.dumps(doc).encode(), token,
                               {"Content-Type": "application/json"})
        return status, json.loads(body)
    row = {"method": METHOD, "taskhash": h("t1"), "outhash": h("o1"), "PN": "a", "task": "do_install"}
    for doc, token, status in (({"outhashes": [row]}, None, 401), ({"outhashes": [row]}, reader, 403),
                               ({"outhashes": [dict(row, owner="me")]}, line, 400),
                               ({"outhashes": [dict(row, taskhash=7)]}, line, 400),
                               ({"outhashes": [row], "unihashes": [[METHOD, h("t1")]]}, line, 400),
                               ({"outhashes": {}}, line, 400)):
        assert post(doc, token)[0] == status, (doc, token)
    assert rows(database) == (set(), set())
    status, counts = post({"outhashes": [row], "unihashes": [[METHOD, h("t1"), h("u1")], [METHOD, h("t2"), h("u2")]]})
    assert (status, counts) == (200, {"outhashes": 1, "unihashes": 2, "remapped": 0, "superseded": []})
    # Another producer's task with the same output: the cache's unihash stays, the producer's is superseded.
    status, counts = post({"outhashes": [dict(row, taskhash=h("t3"))], "unihashes": [[METHOD, h("t3"), h("u3")]]})
    assert (status, counts) == (200, {"outhashes": 1, "unihashes": 1, "remapped": 1, "superseded": [h("u3")]})
    unis, outs = rows(database)
    assert {(METHOD, h("t1"), h("u1")), (METHOD, h("t2"), h("u2")), (METHOD, h("t3"), h("u1"))} <= unis
    assert status == 200 and len(outs) == 2


def test_publish_to_refused_or_unreachable(served, tmp_path):
    producer = str(tmp_path / "producer")
    make_producer(producer, [(h("a"), h("oa"), h("ua"), "a", "do_install")])
    bad = write_token(tmp_path, "ci-9:" + "x" * 43)
    result = run("publish", "--from", producer, "--to", served.url, "--token-file", bad)
    assert result.returncode == 1 and "takes no uploads" in result.stderr, result   # no producer token yet
    add_token(served.cache_dir, "ci-1")
    result = run("publish", "--from", producer, "--to", served.url, "--token-file", bad)
    assert result.returncode == 1 and "refused token ci-9 (401)" in result.stderr, result
    closed = "http://127.0.0.1:%d" % served.hashserv_port   # a port that is no http server
    silent = run("publish", "--from", producer, "--to", "http://127.0.0.1:1", "--token-file", bad)
    assert silent.returncode == 1 and "cannot reach" in silent.stderr, silent
    assert closed
    for args, text in (((), "needs --token-file"), (("--token-file", bad, served.cache_dir), "not both")):
        one = run("publish", "--from", producer, "--to", served.url, *args)
        assert one.returncode == 2 and text in one.stderr, one
    assert cache_files(served.cache_dir) == set()


def test_reported_equivalences_never_in_the_clear():
    """Equivalences a producer reports itself (--hashserv, or a cache that does not merge them) go as the
    token's user: to a cache reached over https, only to a wss:// or unix:// hash server."""
    from equivcache.cli import Failure
    from equivcache.server.producer.upload import safe_hashserv
    plain = {"hashserv": ["cache.example.com:8686"]}
    assert safe_hashserv("http://cache.example.com", plain) == "cache.example.com:8686"
    with pytest.raises(Failure, match="where the token would travel in the clear"):
        safe_hashserv("https://cache.example.com", plain)
    assert safe_hashserv("https://cache.example.com", {"hashserv": ["cache.example.com:8686",
                                                                    "wss://cache.example.com/ws"]}) \
        == "wss://cache.example.com/ws"


@pytest.mark.skipif(os.getuid() == 0, reason="bitbake refuses to run as root")
def test_publish_reads_the_build_configuration(served, tmp_path):
    """SSTATE_DIR and the auto server's database outside the build directory,
    DL_DIR in site.conf: publish (local and --to) finds them as bitbake does."""
    outside = str(tmp_path / "outside")
    make_producer(outside, [(h("a"), h("oa"), h("ua"), "a", "do_install")])
    os.makedirs(os.path.join(outside, "dl"))
    with open(os.path.join(outside, "dl", "a-1.0.tar.gz"), "w") as f:
        f.write("source")
    build = tmp_path / "build"
    (build / "conf").mkdir(parents=True)
    (build / "conf" / "bblayers.conf").write_text('BBPATH = "${TOPDIR}"\nBBLAYERS = "%s/meta"\n' % POKY_DIR)
    (build / "conf" / "local.conf").write_text('DISTRO = "nodistro"\nSSTATE_DIR = "%s/sstate-cache"\n'
                                               'PERSISTENT_DIR = "%s/cache"\n' % (outside, outside))
    (build / "conf" / "site.conf").write_text('DL_DIR = "%s/dl"\n' % outside)
    token = write_token(tmp_path, add_token(served.cache_dir, "ci-1"))
    result = run("publish", "--from", str(build), "--to", served.url, "--token-file", token)
    assert result.returncode == 0, result
    assert "SSTATE_DIR %s/sstate-cache" % outside in result.stdout, result.stdout
    assert "sstate: 2 files uploaded" in result.stdout and "downloads: 1 files uploaded" in result.stdout
    assert "equivalences: 1 output hashes" in result.stdout
    local = run("publish", "--from", str(build), str(tmp_path / "local-cache"))
    assert local.returncode == 0 and "sstate: 2 files copied" in local.stdout, local


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None or os.getuid() == 0,
                    reason="needs nginx (Debian package nginx-light) and a user other than root")
def test_nginx_proxies_uploads_with_tls(served, tmp_path):
    """config --nginx --upload-port --tls-cert: a real nginx terminates TLS, serves the
    mirror and passes uploads (within its body limit) and the dashboard to serve; publish --to https:// works."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port = free_port()
    site = run("config", "--nginx", "--bind", "127.0.0.1", "--http-port", str(port), "--upload-port",
               str(served.http_port), "--max-upload-size", "64K", "--tls-cert", cert, "--tls-key", key,
               served.cache_dir)
    assert site.returncode == 0, site
    assert "proxy_pass http://127.0.0.1:%d;" % served.http_port in site.stdout and "client_max_body_size 64k;" \
        in site.stdout and "listen 127.0.0.1:%d ssl;" % port in site.stdout
    nginx = Nginx(str(tmp_path), site.stdout, port)
    try:
        producer = str(tmp_path / "producer")
        make_producer(producer, [(h("a%d" % i), h("oa%d" % i), h("ua%d" % i), "a", "do_install") for i in range(3)])
        token = write_token(tmp_path, add_token(served.cache_dir, "ci-1"))
        url = "https://127.0.0.1:%d" % port
        env = dict(os.environ, SSL_CERT_FILE=cert)
        command = [sys.executable, SERVER, "publish", "--from", producer, "--to", url, "--token-file", token]
        # The cache merges the equivalences: the token goes to no hash server.
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0 and "sstate: 6 files uploaded" in result.stdout, result
        assert "merged by the cache at %s for ci-1" % url in result.stdout, result.stdout
        # Told to report them to a hash server: as the token's user, there.
        result = subprocess.run(command + ["--hashserv", served.hashserv], capture_output=True, text=True, env=env,
                                timeout=120)
        assert result.returncode == 0 and "sstate: 0 files uploaded" in result.stdout, result
        assert "reported to %s as ci-1" % served.hashserv in result.stdout, result.stdout
        context = ssl.create_default_context(cafile=cert)

        def through_nginx(method, path, body, headers):
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
            try:
                connection.request(method, path, body=body, headers=headers)
                return connection.getresponse().status
            finally:
                connection.close()
        auth = "Basic " + base64.b64encode(open(token).read().strip().encode()).decode()
        path = "/upload/v1/" + urllib.parse.quote(OBJECT)
        assert through_nginx("PUT", path, b"x" * (65 << 10), {"Authorization": auth, "X-Equivcache-SHA256": "0" * 64}) \
            == 413   # nginx's limit, before serve sees it
        assert through_nginx("PUT", path, b"x", {"X-Equivcache-SHA256": hashlib.sha256(b"x").hexdigest()}) == 401
        assert through_nginx("PUT", "/equivcache.json", b"x", {}) == 405
        # The dashboard and a build's report, through nginx.
        assert through_nginx("GET", "/", None, {}) == 200 and through_nginx("GET", "/api/v1/summary", None, {}) == 200
        assert through_nginx("POST", "/api/v1/reports", b"{}", {"Content-Type": "application/json"}) == 400
        assert through_nginx("POST", "/api/v1/summary", b"{}", {}) == 405
        assert through_nginx("GET", "/durations.json", None, {}) == 200
        assert not os.path.exists(os.path.join(served.cache_dir, OBJECT))
        check = run("check", served.cache_dir)
        assert check.returncode == 0 and "consistent" in check.stdout, check
    finally:
        nginx.stop()


def test_publish_killed_mid_upload(tmp_path):
    """SIGKILL of a real publish --to while a large object is on its way: no partial file under a
    published name, nothing lost; the next publish completes and check is clean."""
    server = CacheServer(str(tmp_path / "cache"))
    try:
        producer = str(tmp_path / "producer")
        make_producer(producer, [(h("big%d" % i), h("obig%d" % i), h("ubig%d" % i), "big", "do_install")
                                 for i in range(4)])
        for path in glob.glob(os.path.join(producer, "sstate-cache", "*", "*", "*.tar.zst")):
            with open(path, "wb") as f:
                f.write(os.urandom(48 << 20))
        token = write_token(tmp_path, add_token(server.cache_dir, "ci-1"))
        publish = subprocess.Popen([sys.executable, SERVER, "publish", "--from", producer, "--to", server.url,
                                    "--token-file", token], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for(lambda: glob.glob(os.path.join(server.cache_dir, "sstate-cache", "*", "*", ".upload-*")), 60,
                 "no upload under way")
        publish.send_signal(signal.SIGKILL)
        publish.wait()
        wait_for(lambda: not glob.glob(os.path.join(server.cache_dir, "sstate-cache", "*", "*", ".upload-*")), 60,
                 "a temporary file stayed")
        for path in cache_files(server.cache_dir):   # whatever took its name is whole
            rel = path.split("sstate-cache/", 1)[1]
            assert filecmp.cmp(os.path.join(server.cache_dir, path), os.path.join(producer, "sstate-cache", rel), False)
        again = run("publish", "--from", producer, "--to", server.url, "--token-file", token)
        assert again.returncode == 0, again
        check = run("check", server.cache_dir)
        assert check.returncode == 0 and "consistent" in check.stdout, check
        assert len(cache_files(server.cache_dir)) == 8
    finally:
        server.stop()
