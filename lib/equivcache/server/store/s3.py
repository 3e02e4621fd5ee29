# SPDX-License-Identifier: MIT
#
# The files of a cache in an S3-compatible bucket (s3://BUCKET/PREFIX): the
# storage protocol (storage.py) beside LocalStorage (local.py), for caches
# past one disk. The public files are laid out under PREFIX as in a cache
# directory, so that consumers read the bucket over plain http(s) as they
# read a served cache directory (EQUIVCACHE_SERVER = "https://GATEWAY/BUCKET/PREFIX",
# the bucket readable anonymously); the cache's private part lives in a
# local state directory (default_state_dir()). boto3, Debian's python3-boto3 (the AWS SDK: its
# multipart transfers abort what they started on failure, it reads
# credentials from the standard places, and RGW, MinIO and AWS all speak
# it). Credentials come from the environment or the AWS config and
# credentials files (AWS_PROFILE), never from a command line; the endpoint
# of a bucket that is not AWS's from AWS_ENDPOINT_URL (as newer AWS SDKs
# read it) or the caller.
#
# An object appears under its name only whole: a PUT is atomic, a multipart
# upload becomes visible at its completion and is aborted on failure. S3
# cannot set an object's time: "used" is when it was last published.

import functools
import os
import re
import tempfile
import urllib.parse

from equivcache.cli import Failure
from equivcache.server.store.storage import Storage, Stored, copy_verified

# Objects larger than this go up in parts of this size (boto3's transfer manager).
MULTIPART = 64 << 20
# Files up to this size go up in a lean PUT (_LeanPut): what most of a
# cache's files are (signature data, small packages' objects); the
# storage's 8 uploads at once hold at most 8 of them in memory.
LEAN = 8 << 20


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_url(url):
    """(bucket, prefix) of s3://BUCKET[/PREFIX]; ValueError if it is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("%s: not an s3://BUCKET/PREFIX URL" % url)
    if not _BUCKET.match(parts.netloc):
        raise ValueError("%s: not an s3://BUCKET/PREFIX URL (a bucket's name is 3 to 63 lower-case letters, "
                         "digits, dots and hyphens)" % url)
    prefix = parts.path.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise ValueError("%s: the prefix has an empty, . or .. part" % url)
    return parts.netloc, prefix


def is_s3(location):
    return location.startswith("s3://")


def _timestamp(value):
    """An S3 time ("2026-12-05T19:00:00.000Z", or what else botocore reads) as an aware datetime."""
    import datetime
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            return parsed
    except (AttributeError, ValueError):
        pass
    import botocore.utils
    return botocore.utils.parse_timestamp(value)


def default_state_dir(url):
    """Where the private part of the cache at url lives unless told:
    $XDG_STATE_HOME (~/.local/state)/equivcache/s3/BUCKET/PREFIX."""
    bucket, prefix = parse_url(url)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "equivcache", "s3", bucket, *(prefix.split("/") if prefix else ()))


def _s3_errors(method):
    """An S3 error (refused credentials, an unreachable endpoint, a failed
    upload) as one line naming the cache and the file: a Failure."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        import boto3.exceptions
        import botocore.exceptions
        try:
            return method(self, *args, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                boto3.exceptions.Boto3Error) as e:
            what = "%s/%s" % (self.url.rstrip("/"), args[0]) if args and isinstance(args[0], str) else self.url
            raise Failure("%s: %s" % (what, e)) from e
    return wrapped


class _LeanPut:
    """A PUT of a small file signed by botocore's own SigV4 signer with the
    client's credentials and sent over the client's own connection pool (its
    endpoint, TLS verification, proxies and timeouts), without the client's
    per-call machinery (parameter checks, a dozen event hooks, an Expect:
    100-continue round trip): a third of put_object()'s CPU a file, which
    is what bounds a publish of many small files. The payload is signed
    over http (the gateway checks its SHA-256), and TLS guards it over https."""

    def __init__(self, client, bucket):
        # The parts of the client it sends through (private to botocore, hence looked for):
        # a path-style SigV4 client with credentials, else no lean PUTs.
        signer = getattr(client, "_request_signer", None)
        self.credentials = getattr(signer, "_credentials", None)
        self.http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self.region = client.meta.region_name
        self.base = "%s/%s/" % (client.meta.endpoint_url.rstrip("/"), bucket)
        self.usable = (self.credentials is not None and self.http is not None and
                       getattr(signer, "signature_version", None) in ("s3v4", "v4") and
                       (client.meta.config.s3 or {}).get("addressing_style") == "path")

    def put(self, key, body, metadata):
        """True if the object is stored; False, having changed nothing, for
        anything else (the caller then uses put_object: botocore's retries,
        redirects and errors), after which this path is not used again."""
        import botocore.auth
        import botocore.awsrequest
        import botocore.exceptions
        headers = {"Content-Length": str(len(body))}
        headers.update({"x-amz-meta-%s" % k: v for k, v in metadata.items()})
        # The key quoted as botocore quotes it (its canonical path is the one signed).
        request = botocore.awsrequest.AWSRequest("PUT", self.base + urllib.parse.quote(key, safe="/~"), data=body,
                                                 headers=headers)
        try:
            botocore.auth.S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
            answer = self.http.send(request.prepare())
            answer.content   # the connection back to the pool
        except (botocore.exceptions.BotoCoreError, AttributeError, TypeError, ValueError):
            self.usable = False
            return False
        if answer.status_code != 200:
            self.usable = False
            return False
        return True


class S3Storage(Storage):
    """The files of a cache under s3://BUCKET/PREFIX (see above)."""

    # An object store answers each PUT in turn's time, not a disk's.
    uploads = 8
    lists = True

    def __init__(self, url, endpoint=None, client=None):
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        if client is None:
            import boto3
            import botocore.config
            import botocore.session
            core = botocore.session.get_session()
            # A listing's LastModified times, parsed by botocore's general parser (dateutil), cost
            # a quarter of a second per thousand objects: S3's ISO 8601 is read directly.
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
            client = boto3.session.Session(botocore_session=core).client(
                "s3", endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
                config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}))
        self.client = client
        self.lean = _LeanPut(client, self.bucket)
        import boto3.s3.transfer
        self.transfer = boto3.s3.transfer.TransferConfig(multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART)

    def key(self, rel):
        return "%s/%s" % (self.prefix, rel) if self.prefix else rel

    def sizes(self, rels):
        """One listing per area the paths are in (not a request per file)."""
        present = {}
        for area in {rel.split("/", 1)[0] for rel in rels}:
            present.update({area + "/" + f.rel: f.size for f in self.files(area)})
        return {rel: present.get(rel) for rel in rels}

    @_s3_errors
    def size(self, rel):
        """The size of a published file, None if absent (one HEAD request)."""
        import botocore.exceptions
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(rel))["ContentLength"]
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    @_s3_errors
    def put_file(self, rel, source, when):
        """Copy a local file to rel (replacing what is there): whole or not at all.
        One PUT below MULTIPART (boto3's transfer manager costs a pool of threads a file),
        a lean one up to LEAN."""
        metadata = {"published": "%d" % when}
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= LEAN and self.lean.usable and self.lean.put(self.key(rel), f.read(), metadata):
                return
            if size < MULTIPART:
                f.seek(0)
                self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=f, Metadata=metadata)
                return
        self.client.upload_file(source, self.bucket, self.key(rel), Config=self.transfer,
                                ExtraArgs={"Metadata": metadata})

    @_s3_errors
    def put_stream(self, rel, stream, length, sha256, when, check=None, replace=False, sync=True):
        """Exactly `length` bytes of `stream` to rel if their SHA-256 is
        `sha256` and check() passes (spooled and checked first: nothing is
        sent to the bucket until the whole body is there and right). A file
        already published under rel is kept unless replace (True if it was)."""
        with tempfile.TemporaryFile() as spool:
            copy_verified(rel, stream, length, sha256, spool)
            if check:
                spool.seek(0)
                check(spool)
            had = self.size(rel) is not None
            if had and not replace:
                return True
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, self.key(rel), Config=self.transfer,
                                       ExtraArgs={"Metadata": {"published": "%d" % when}})
        return had

    @_s3_errors
    def put_bytes(self, rel, data):
        """Replace rel with data in one PUT (atomic: a reader gets the old or the new)."""
        self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data,
                               ContentType="application/json" if rel.endswith(".json") else "application/octet-stream")

    def append(self, rel, content, kept):
        """Nothing is appended in place in an object store: rel written whole."""
        self.put_bytes(rel, content)

    @_s3_errors
    def get_bytes(self, rel):
        """The content of rel, None if absent."""
        import botocore.exceptions
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    @_s3_errors
    def remove(self, rel):
        self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))

    @_s3_errors
    def files(self, area):
        """An object's "used" is when it was last written: S3 keeps no access time."""
        start = self.key(area) + "/"
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for obj in page.get("Contents", []):
                written = obj["LastModified"].timestamp()
                found.append(Stored(obj["Key"][len(start):], obj["Size"], written, written))
        return found
