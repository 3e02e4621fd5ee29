# SPDX-License-Identifier: MIT
#
# The object store the cache will live in past one disk, as a real server:
# Ceph's RADOS Gateway from Debian (a single-node cluster on memstore that
# the module starts once, on loopback) and boto3. What the cache's S3
# storage relies on, shown on the real thing: atomic PUTs, multipart uploads
# (and their abort), range GETs, listing, and an anonymous read-only bucket
# policy through which consumers read the mirror over plain http.

import json
import shutil
import time
import urllib.error
import urllib.request

import pytest

from oeqa.utils.equivcache import CephRGW

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
    assert get("%s/cache/team/absent" % rgw.url)[0] == 404
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
