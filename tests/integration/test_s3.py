# SPDX-License-Identifier: MIT
#
# The object store the cache will live in past one disk, as a real server:
# Ceph's RADOS Gateway from Debian (a single-node cluster on memstore that
# the module starts once, on loopback) and boto3. What the cache's S3
# storage relies on, shown on the real thing: atomic PUTs, multipart uploads
# (and their abort), range GETs, listing, and an anonymous read-only bucket
# policy through which consumers read the mirror over plain http.

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import shutil
import time
import urllib.error
import urllib.request

import pytest

from conftest import need_bitbake
from oeqa.utils.equivcache import SERVER, CacheServer
from oeqa.utils.equivcache_services import CephRGW

need_bitbake()

import hashserv  # noqa: E402
from equivcache import catalog, durations, pathkeys, reportsend  # noqa: E402
from test_dashboard import consumer_report, timed_producer  # noqa: E402
from test_server import METHOD, h  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("radosgw") is None or shutil.which("ceph-mon") is None,
                                reason="needs Ceph's RADOS Gateway (Debian packages radosgw, ceph-mon, ceph-osd; "
                                       "tests/setup installs them)")


@pytest.fixture(scope="module")
def rgw(tmp_path_factory):
    server = CephRGW(str(tmp_path_factory.mktemp("ceph")))
    print("RADOS Gateway up in %.1f s" % server.started_in)
    yield server
    server.stop()


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def public_read(client, bucket):
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
                       "Resource": ["arn:aws:s3:::%s/*" % bucket]}]}))


def test_objects_ranges_and_anonymous_reads(rgw):
    s3 = rgw.client()
    s3.create_bucket(Bucket="cache")
    body = bytes(range(256)) * 64
    s3.put_object(Bucket="cache", Key="team/sstate-cache/ab/cd/sstate:x:::::12:abcd_populate_sysroot.tar.zst",
                  Body=body)
    key = "team/sstate-cache/ab/cd/sstate:x:::::12:abcd_populate_sysroot.tar.zst"
    assert s3.head_object(Bucket="cache", Key=key)["ContentLength"] == len(body)
    got = s3.get_object(Bucket="cache", Key=key, Range="bytes=100-199")["Body"].read()
    assert got == body[100:200]
    listed = s3.list_objects_v2(Bucket="cache", Prefix="team/")
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [(key, len(body))]

    # Without a policy, anonymous http readers get 403; with a read-only one, the object and its ranges.
    url = "%s/cache/%s" % (rgw.url, urllib.request.quote(key))
    assert get(url)[0] == 403
    public_read(s3, "cache")
    assert get(url) == (200, body)
    assert get(url, {"Range": "bytes=-16"}) == (206, body[-16:])
    # An absent key is 403, not 404, to a reader who may not list the bucket (as on AWS).
    assert get("%s/cache/team/absent" % rgw.url)[0] == 403
    # Read-only: an anonymous PUT is refused.
    request = urllib.request.Request(url, data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    assert s3.get_object(Bucket="cache", Key=key)["Body"].read() == body


def test_multipart_whole_or_nothing(rgw):
    s3 = rgw.client()
    s3.create_bucket(Bucket="multipart")
    part = b"x" * (5 << 20)
    # An upload aborted half-way leaves no object and no parts.
    upload = s3.create_multipart_upload(Bucket="multipart", Key="big")["UploadId"]
    s3.upload_part(Bucket="multipart", Key="big", UploadId=upload, PartNumber=1, Body=part)
    assert "Contents" not in s3.list_objects_v2(Bucket="multipart")
    s3.abort_multipart_upload(Bucket="multipart", Key="big", UploadId=upload)
    assert s3.list_multipart_uploads(Bucket="multipart").get("Uploads", []) == []
    # Completed: the object appears whole, under its name, at once.
    upload = s3.create_multipart_upload(Bucket="multipart", Key="big")["UploadId"]
    etags = [s3.upload_part(Bucket="multipart", Key="big", UploadId=upload, PartNumber=n, Body=part + bytes([n]))
             ["ETag"] for n in (1, 2)]
    s3.complete_multipart_upload(Bucket="multipart", Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": n} for n, e in zip((1, 2), etags)]})
    head = s3.head_object(Bucket="multipart", Key="big")
    assert head["ContentLength"] == 2 * (len(part) + 1)
    started = time.monotonic()
    assert s3.get_object(Bucket="multipart", Key="big", Range="bytes=%d-%d" % (len(part), len(part)))["Body"] \
        .read() == b"\x01"
    assert time.monotonic() - started < 10


def test_s3_storage(rgw, tmp_path, monkeypatch):
    """The cache's S3 storage on the real gateway: the storage protocol LocalStorage implements too, whole
    files or nothing."""
    import io
    import hashlib
    from equivcache.server.store import s3 as s3storage
    from equivcache.server.store.storage import Refused

    s3 = rgw.client()
    s3.create_bucket(Bucket="storage")
    storage = s3storage.S3Storage("s3://storage/teams/a", client=s3)
    assert storage.size("sstate-cache/x") is None and storage.get_bytes("index.json") is None
    small = tmp_path / "small"
    small.write_bytes(b"object")
    storage.put_file("sstate-cache/ab/small", str(small), 1000)
    assert storage.size("sstate-cache/ab/small") == 6
    assert s3.head_object(Bucket="storage", Key="teams/a/sstate-cache/ab/small")["Metadata"] == {"published": "1000"}

    # A small file goes up in a lean PUT, past the client's calls (none of them is made), under its name
    # as botocore quotes it; one the gateway refuses is PUT again by the client, and lean PUTs stop.
    import botocore.credentials
    calls = []
    s3.meta.events.register("before-call.s3.PutObject", lambda **kwargs: calls.append(kwargs["params"]["url_path"]))
    name = "sstate-cache/ab/sstate:gtk+3:core2-64-poky-linux:3.24.41:r0:core2-64:12:ab~cd_package.tar.zst"
    small.write_bytes(b"lean object")
    storage.put_file(name, str(small), 1001)
    head = s3.head_object(Bucket="storage", Key="teams/a/" + name)
    assert (head["ContentLength"], head["Metadata"], calls, storage.lean.usable) == (11, {"published": "1001"}, [],
                                                                                      True)
    assert s3.get_object(Bucket="storage", Key="teams/a/" + name)["Body"].read() == b"lean object"
    storage.lean.credentials = botocore.credentials.Credentials(rgw.access_key, "not-the-secret")
    small.write_bytes(b"refused, then put")
    storage.put_file("sstate-cache/ab/again", str(small), 1002)
    assert s3.get_object(Bucket="storage", Key="teams/a/sstate-cache/ab/again")["Body"].read() == b"refused, then put"
    assert (len(calls), storage.lean.usable) == (1, False)
    storage.remove(name)
    storage.remove("sstate-cache/ab/again")

    # Past the threshold, in parts; a source that fails half-way leaves neither object nor parts.
    monkeypatch.setattr(s3storage, "MULTIPART", 5 << 20)
    storage = s3storage.S3Storage("s3://storage/teams/a", client=s3)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 << 20))
    storage.put_file("downloads/big.tar.gz", str(big), 1000)
    assert storage.size("downloads/big.tar.gz") == 11 << 20
    assert s3.head_object(Bucket="storage", Key="teams/a/downloads/big.tar.gz")["ETag"].endswith('-3"')

    class Failing(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > (6 << 20):
                raise OSError("disk gone")
            return super().read(n)
    with pytest.raises(OSError):
        s3.upload_fileobj(Failing(big.read_bytes()), "storage", "teams/a/downloads/broken", Config=storage.transfer)
    assert storage.size("downloads/broken") is None
    assert s3.list_multipart_uploads(Bucket="storage").get("Uploads", []) == []

    # An upload's body: checked before anything reaches the bucket; an object already there is kept.
    body = b"uploaded"
    digest = hashlib.sha256(body).hexdigest()
    with pytest.raises(Refused) as wrong:
        storage.put_stream("sstate-cache/ab/up", io.BytesIO(body), len(body), "0" * 64, 1000)
    assert wrong.value.status == 422 and storage.size("sstate-cache/ab/up") is None
    with pytest.raises(Refused) as short:
        storage.put_stream("sstate-cache/ab/up", io.BytesIO(body[:3]), len(body), digest, 1000)
    assert short.value.status == 400 and storage.size("sstate-cache/ab/up") is None
    assert storage.put_stream("sstate-cache/ab/up", io.BytesIO(body), len(body), digest, 1000) is False
    assert storage.put_stream("sstate-cache/ab/up", io.BytesIO(body), len(body), digest, 1000) is True

    storage.put_bytes("index.json", b"{}")
    assert storage.get_bytes("index.json") == b"{}"
    assert s3.head_object(Bucket="storage", Key="teams/a/index.json")["ContentType"] == "application/json"
    # An append is the whole file written again: a reader's copy of its start stays valid.
    storage.put_bytes("sstate-index/journal", b"12345678")
    storage.append("sstate-index/journal", b"12345678abcdefgh", 8)
    assert storage.get_bytes("sstate-index/journal") == b"12345678abcdefgh"
    listed = storage.files("sstate-cache")
    assert sorted((f.rel, f.size) for f in listed) == [("ab/small", 6), ("ab/up", len(body))]
    assert all(f.used == f.written for f in listed)   # no access time in an object store
    # A storage that makes its own client reads the listing's times itself: the same as botocore's parser.
    for name, value in (("AWS_ACCESS_KEY_ID", rgw.access_key), ("AWS_SECRET_ACCESS_KEY", rgw.secret_key),
                        ("AWS_DEFAULT_REGION", "default")):
        monkeypatch.setenv(name, value)
    own = s3storage.S3Storage("s3://storage/teams/a", endpoint=rgw.url)
    assert own.client is not s3 and sorted(own.files("sstate-cache")) == sorted(listed)
    assert storage.sizes(["sstate-cache/ab/up", "sstate-cache/ab/none"]) == {
        "sstate-cache/ab/up": len(body), "sstate-cache/ab/none": None}
    storage.remove("sstate-cache/ab/small")
    assert [f.rel for f in storage.files("sstate-cache")] == ["ab/up"]
    for bad in ("http://x/y", "s3://", "s3://bkt/a/../c", "s3://bkt/a//c", "s3://Bucket/x"):
        with pytest.raises(ValueError):
            s3storage.parse_url(bad)
    assert s3storage.parse_url("s3://bkt/") == ("bkt", "") and s3storage.parse_url("s3://bkt/p/q") == ("bkt", "p/q")


def test_publish_to_a_bucket(rgw, tmp_path):
    """publish s3://BUCKET/PREFIX: the cache's public files in the bucket, read anonymously over http as
    a served cache directory is (descriptor, index.json, durations.json, the sstate index in two
    requests); check on the bucket; credentials from the environment only."""
    s3 = rgw.client()
    s3.create_bucket(Bucket="team-cache")
    public_read(s3, "team-cache")
    expected = timed_producer(str(tmp_path / "p1"), ["aa", "bb", "cc"])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=rgw.access_key, AWS_SECRET_ACCESS_KEY=rgw.secret_key,
               AWS_DEFAULT_REGION="default", AWS_ENDPOINT_URL=rgw.url)
    state = str(tmp_path / "state")

    def server(*args):
        result = subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, env=env,
                                timeout=300)
        assert rgw.secret_key not in " ".join(args)
        return result
    result = server("publish", "--from", str(tmp_path / "p1"), "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 0, result
    assert "sstate: 6 files copied" in result.stdout and "3 objects' tasks and 0 tasks they spare newly timed" in result.stdout, result
    assert os.path.isfile(os.path.join(state, "hashserv.db"))   # the equivalences: in the state directory

    base = rgw.url + "/team-cache/yocto"
    status, body = get(base + "/equivcache.json")
    assert status == 200 and json.loads(body)["sstate"] == "sstate-cache"
    doc, _, errors = catalog.read_first([base + "/" + catalog.NAME], 10, 1 << 20)
    assert doc is not None, errors
    assert sorted((o["recipe"], o["task"], o["unihash"]) for o in doc["objects"]) == sorted(expected)
    timed = json.loads(get(base + "/" + durations.NAME)[1])
    assert {k: e["seconds"] for k, e in durations.entries_of(timed).items()} == expected
    fetched = pathkeys.load(base + "/sstate-cache", str(tmp_path / "client"), 10)
    assert fetched.requests == 2 and fetched.head["entries"] == 6
    assert {pathkeys.key_int(o["path"]) for o in doc["objects"]} <= set(fetched.keys)

    # Again: nothing copied, the index unchanged; then a new object appended, read with a range request.
    result = server("publish", "--from", str(tmp_path / "p1"), "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 0 and "sstate: 0 files copied" in result.stdout, result
    timed_producer(str(tmp_path / "p2"), ["dd"])
    result = server("publish", "--from", str(tmp_path / "p2"), "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 0 and "sstate index: 8 files (2 appended)" in result.stdout, result
    again = pathkeys.load(base + "/sstate-cache", str(tmp_path / "client"), 10)
    assert again.requests == 2 and again.received < fetched.received + 2 * pathkeys.KEY_SIZE + 1000
    assert again.head["generation"] == fetched.head["generation"] and again.head["entries"] == 8

    result = server("check", "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 0 and "consistent" in result.stdout, result
    s3.delete_object(Bucket="team-cache", Key="yocto/sstate-cache/" + doc["objects"][0]["path"])
    result = server("check", "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 1 and "which is missing" in result.stdout, result
    result = server("status", "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 3 and "s3://team-cache/yocto is not being served" in result.stdout, result
    assert "sstate-cache     3 objects" in result.stdout and "downloads        0 files" in result.stdout, result

    # serve: the hash server of the bucket's equivalences, named in the bucket's descriptor, and the
    # upload endpoint of remote producers, whose files go to the bucket.
    served = CacheServer("s3://team-cache/yocto", extra=["--state-dir", state], env=env, state_dir=state)
    try:
        descriptor = json.loads(get(base + "/equivcache.json")[1])
        assert descriptor["hashserv"] == [served.hashserv]
        with contextlib.closing(hashserv.create_client(served.hashserv)) as client:
            for recipe in ("aa", "dd"):
                assert client.get_unihash(METHOD, h("t" + recipe)) == h("u" + recipe)
        assert get(served.url + "/equivcache.json") == get(base + "/equivcache.json")   # for publish --to
        assert get(served.url + "/" + catalog.NAME)[0] == 404   # consumers read the bucket
        token = server("token", "add", "ci-2", state).stdout.strip()
        (tmp_path / "ci-2.token").write_text(token + "\n")
        os.chmod(tmp_path / "ci-2.token", 0o600)
        timed_producer(str(tmp_path / "p3"), ["ee"])
        result = server("publish", "--from", str(tmp_path / "p3"), "--to", served.url, "--token-file",
                        str(tmp_path / "ci-2.token"))
        assert result.returncode == 0 and "sstate: 2 files uploaded" in result.stdout, result
        assert s3.head_object(Bucket="team-cache", Key="yocto/" + catalog.NAME)
        doc = json.loads(get(base + "/" + catalog.NAME)[1])
        assert ("ee", "do_populate_sysroot", h("uee")) in {(o["recipe"], o["task"], o["unihash"])
                                                           for o in doc["objects"]}
        summary = json.loads(get(served.url + "/api/v1/summary")[1])
        assert summary["cache"]["objects"] == sum(1 for o in doc["objects"] if o["path"])
        result = server("status", "--state-dir", state, "s3://team-cache/yocto")
        assert result.returncode == 0 and "builds reported  none yet" in result.stdout, result
    finally:
        assert served.stop() == 0

    # Refused credentials: one line naming the bucket, nothing written.
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    before = s3.list_objects_v2(Bucket="team-cache")["KeyCount"]
    result = server("publish", "--from", str(tmp_path / "p2"), "--state-dir", state, "s3://team-cache/yocto")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    assert result.stderr.startswith("equivcache-server: s3://team-cache/yocto") and "SignatureDoesNotMatch" in \
        result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert s3.list_objects_v2(Bucket="team-cache")["KeyCount"] == before
    result = server("publish", "--from", str(tmp_path / "p2"), "--state-dir", state, "s3://team cache")
    assert result.returncode == 2 and "not an s3://BUCKET/PREFIX" in result.stderr, result


@pytest.fixture(scope="module")
def s3_env(rgw):
    return dict(os.environ, AWS_ACCESS_KEY_ID=rgw.access_key, AWS_SECRET_ACCESS_KEY=rgw.secret_key,
                AWS_DEFAULT_REGION="default", AWS_ENDPOINT_URL=rgw.url)


def bucket_recipes(s3, bucket, prefix):
    """{recipe} of the objects under PREFIX/sstate-cache/, and of those index.json lists."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/sstate-cache/").get("Contents", [])
    present = {catalog.parse_sstate_name(o["Key"])[0] for o in listed if o["Key"].endswith(".tar.zst")}
    doc = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "/" + catalog.NAME)["Body"].read())
    return present, {o["recipe"] for o in doc["objects"] if o["path"]}


@pytest.fixture(scope="module")
def producers(tmp_path_factory):
    """Five producers, recipe0 to recipe4, each one object with its signature data."""
    root = tmp_path_factory.mktemp("producers")
    for n in range(5):
        timed_producer(str(root / ("p%d" % n)), ["recipe%d" % n])
    return root


# The phases whose work differs on a bucket (listing, index, removal), and the sweep after them; the
# others (ledger, mark) are a cache directory's, test_gc.py's.
@pytest.mark.parametrize("phase", ["plan:1", "index:1", "delete:1", "delete:2", "sweep:1"])
def test_gc_on_a_bucket_killed_at_every_phase(rgw, s3_env, producers, tmp_path, phase):
    """gc of an s3:// cache to a bound, least recently published first, SIGKILLed at each phase: check
    finds it consistent, and the next gc finishes the work."""
    s3 = rgw.client()
    bucket = "gc-" + phase.replace(":", "-")
    s3.create_bucket(Bucket=bucket)
    state = str(tmp_path / "state")
    url = "s3://%s/cache" % bucket

    def server(*args, env=s3_env):
        return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, env=env, timeout=300)
    for n in range(5):
        result = server("publish", "--from", str(producers / ("p%d" % n)), "--state-dir", state, url)
        assert result.returncode == 0, result
        time.sleep(0.1)   # the bucket's times (to the millisecond) are the publishes' order
    # Five groups of equal size (an object, its .siginfo, its signature data): room for two.
    group = sum(o["Size"] for area in ("sstate-cache", "siginfo")
                for o in s3.list_objects_v2(Bucket=bucket, Prefix="cache/%s/" % area)["Contents"]) // 5
    killed = server("gc", "--max-size", str(2 * group), "--grace-days", "0", "--keep-publishes", "0",
                    "--state-dir", state, url, env=dict(s3_env, EQUIVCACHE_GC_TEST_KILL=phase))
    assert killed.returncode == -9, killed
    check = server("check", "--state-dir", state, url)
    assert check.returncode == 0 and "consistent" in check.stdout, (killed, check)
    present, listed = bucket_recipes(s3, bucket, "cache")
    assert listed <= present
    result = server("gc", "--state-dir", state, url)   # the remembered bound
    assert result.returncode == 0, result
    present, listed = bucket_recipes(s3, bucket, "cache")
    assert present == listed == {"recipe3", "recipe4"}, result.stdout
    timed = json.loads(s3.get_object(Bucket=bucket, Key="cache/" + durations.NAME)["Body"].read())
    assert {t["recipe"] for t in timed["tasks"]} == {"recipe3", "recipe4"}
    with contextlib.closing(sqlite3.connect(os.path.join(state, "hashserv.db"))) as db:
        assert {r for r, in db.execute("SELECT unihash FROM unihashes_v3")} == {h("urecipe3"), h("urecipe4")}


def test_gc_on_a_bucket_by_real_use(rgw, s3_env, producers, tmp_path):
    """A bucket keeps no access time: gc counts as used what builds restored (the unihashes of their
    reports to the cache's serve). An object published long ago and restored by a recent build stays;
    a newer one nobody restored goes."""
    s3 = rgw.client()
    s3.create_bucket(Bucket="gc-by-use")
    state, url = str(tmp_path / "state"), "s3://gc-by-use/cache"

    def server(*args):
        return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, env=s3_env, timeout=300)
    for n in (0, 1):
        assert server("publish", "--from", str(producers / ("p%d" % n)), "--state-dir", state, url).returncode == 0
        time.sleep(1.1)   # recipe0's object is the older
    group = sum(o["Size"] for area in ("sstate-cache", "siginfo")
                for o in s3.list_objects_v2(Bucket="gc-by-use", Prefix="cache/%s/" % area)["Contents"]) // 2
    bound = ("--max-size", str(group), "--keep-publishes", "0", "--grace-days", "0")
    before = server("gc", "--dry-run", *bound, "--state-dir", state, url)
    assert "recipe0" in before.stdout and "recipe1" not in before.stdout, before.stdout   # by publish time

    served = CacheServer(url, extra=["--state-dir", state], env=s3_env, state_dir=state)
    try:
        restored = {("recipe0", "do_populate_sysroot", h("urecipe0"))}
        doc = reportsend.compact(consumer_report(restored, {}, None), "ci")
        assert doc["saved"]["restored_unihashes"] == [h("urecipe0")]
        request = urllib.request.Request(served.url + reportsend.PATH, data=json.dumps(doc).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201
    finally:
        assert served.stop() == 0
    result = server("gc", *bound, "--state-dir", state, url)
    assert result.returncode == 0, result
    present, listed = bucket_recipes(s3, "gc-by-use", "cache")
    assert present == listed == {"recipe0"}, result.stdout
