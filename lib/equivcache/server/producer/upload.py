# SPDX-License-Identifier: MIT
#
# The upload client (equivcache-server publish --to URL): a producer
# publishes its build to a cache served elsewhere. One request asks which files the cache lacks;
# only those are uploaded (each with its size and SHA-256, which the server
# checks before the file takes its name); the producer's equivalences go in
# one request, which the cache merges (or, with --hashserv or to an older
# cache, to a hash server as the token's hashserv user, @read @report, the
# way a build reports them: then bitbake's hashserv client is imported from
# the bitbake directory found); one commit updates the cache's indexes.
# Each connection to the cache: connection.py.

import contextlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from equivcache import descriptor as desc
from equivcache.background import Background
from equivcache.cli import Failure, Progress
from equivcache.formatting import human
from equivcache.server.hashequiv.database import NoLogin, merge_database, read_producer_database
from equivcache.server.hashequiv.processes import import_hashserv
from equivcache.server.hashequiv.tokens import read_token_file
from equivcache.server.producer.connection import Upload
from equivcache.server.producer.build import newest_build_configuration, producer_of, producer_paths
from equivcache.server.producer.publish import commit_line, published_unihashes
from equivcache.server.store.storage import cache_path
from equivcache.server.store import signatures
from equivcache.signing import SIG_SUFFIX
from equivcache.uploadapi import MANIFEST_LIMIT, PREFIX, equivalences_document as equivalences_doc

# equivalence_route(): the cache merges the equivalences, answering within this many seconds.
CACHE = "cache"
MERGE_TIMEOUT = 300
CONNECTIONS = 2
# What one batch request carries at most (each batch ends with the
# server's sync: the files are shared out so that each connection's batches
# are as few as these allow).
BATCH_FILES = 1000
BATCH_BYTES = 64 << 20


def batches(area, source, files, signed):
    """files in batches of at most BATCH_FILES files and about BATCH_BYTES,
    or a CONNECTIONS-th of the files' bytes if less: [(cache path, local
    path, size, signature or None)] each."""
    limit = min(BATCH_BYTES, max(1 << 20, sum(size for _, size in files) // CONNECTIONS + 1))
    batch, size = [], 0
    for rel, length in files:
        signature = None
        if signed and signatures.kind(cache_path(area, rel)) == "object":
            with open(os.path.join(source, rel + SIG_SUFFIX), "rb") as f:
                signature = f.read()
        batch.append((cache_path(area, rel), os.path.join(source, rel), length, signature))
        size += length
        if len(batch) >= BATCH_FILES or size >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def upload_files(connections, area, source, files, what, signed=False):
    """Upload (relative path, size) files of source to area, in batches over
    the connections at once (each file one PUT to a server without
    batches); to a signed cache, each sstate object with its .sig.
    Returns (files stored, bytes)."""
    progress = Progress("uploading " + what, len(files))
    pending = batches(area, source, files, signed)
    lock = threading.Lock()
    stored = []

    def work(connection):
        while True:
            with lock:
                batch = next(pending, None)
            if batch is None:
                return
            done = connection.batch(batch) if connection.batches else None
            if done is None:   # a server without batches: one PUT each
                connection.batches = False
                sizes = [size for rel, path, size, signature in batch if connection.put(rel, path, signature)]
                done = (len(sizes), sum(sizes))
            with lock:
                stored.append(done)
                progress.step(len(batch))
    with ThreadPoolExecutor(len(connections)) as pool:
        for result in [pool.submit(work, c) for c in connections]:
            result.result()   # the first failure, raised here
    progress.close()
    return sum(c for c, _ in stored), sum(b for _, b in stored)


def publish_remote(bitbake, builddir, url, token_file, sstate_dir=None, downloads_dir=None, hashserv_db=None,
                   stamps_dirs=None, hashserv_address=None, equivalences=True, out=sys.stdout, buildstats_dirs=None):
    """Publish a producer's build to the cache served at url (without its
    equivalences if equivalences is false: a build that reported them itself)."""
    name, secret = read_token_file(token_file)
    paths = producer_paths(bitbake, builddir, sstate_dir, downloads_dir, stamps_dirs,
                           hashserv_db or (None if equivalences else "-"), out, buildstats_dirs)
    timed = paths.durations(name)
    outhashes, unihashes = read_producer_database(paths.hashserv_db) if equivalences else ([], {})
    started = time.time()
    publish_id = secrets.token_hex(8)   # a commit tried again (a replica gone) is noted once
    with contextlib.closing(Upload(url, name, secret)) as upload:
        descriptor = upload.descriptor()
        signed = bool(desc.valid_sigs(descriptor))
        trees = [(area, signed_files(area, files, source) if signed else files, source, what)
                 for area, files, source, what in paths.files()]
        manifest = [(cache_path(area, rel), size) for area, files, _, _ in trees for rel, size in files]
        reply = upload.post("missing", {"files": manifest})
        missing = set(reply["missing"])
        route = equivalence_route(bitbake, url, descriptor, reply, hashserv_address, equivalences,
                                  (outhashes, unihashes))
        # Objects first, equivalences after: a consumer that gets a unihash
        # from the server finds its object on the mirror.
        connections = [upload] + [Upload(url, name, secret) for _ in range(CONNECTIONS - 1)]
        total_sent = [0, 0]
        try:
            for area, files, source, what in trees:
                wanted = [(rel, size) for rel, size in files if cache_path(area, rel) in missing]
                sent, size_sent = 0, 0
                # To a signed cache, the objects first: the signature data of one it refuses is not sent.
                for part in signed_first(area, wanted) if signed else [wanted]:
                    count, size = upload_files(connections, area, source, part, what, signed)
                    sent, size_sent = sent + count, size_sent + size
                total_sent[0] += sent
                total_sent[1] += size_sent
                out.write("%s: %d files uploaded (%s), %d already present, from %s\n"
                          % (what, sent, human(size_sent), len(files) - sent, source))
        finally:
            for connection in connections[1:]:
                connection.close()
        paths.say_absent(out)
        paths.say_durations(timed, out)

        superseded = send_equivalences(route, upload, name, secret, outhashes, unihashes, paths.hashserv_db, out)
        summary = upload.post("commit", {
            "publish": publish_id,
            "unihashes": sorted(published_unihashes(outhashes, unihashes)), "started": started,
            "superseded": sorted(superseded), "producer": producer_of(newest_build_configuration(paths.tmpdirs)),
            "sent": {"files": total_sent[0], "bytes": total_sent[1]},
            "files": manifest,   # what the cache then holds: its commit need not list it
            "durations": [{"recipe": r, "task": t, "unihash": u, "seconds": e["seconds"], "measured": e["measured"]}
                          for (r, t, u), e in sorted(timed.items())]})
        out.write(commit_line(summary))
    out.write("publish: done in %.1f s\n" % (time.time() - started))
    return 0


def safe_hashserv(url, descriptor):
    """The cache's hash server to report to as the token's user: over TLS
    (wss://) when the cache is reached over https, never plain TCP then."""
    if urllib.parse.urlsplit(url).scheme != "https":
        return descriptor["hashserv"][0]
    for address in descriptor["hashserv"]:
        if address.startswith(("wss://", "unix://")):
            return address
    raise Failure("%s is reached over https, but its hash server is only %s, where the token would travel in the "
                  "clear: serve the cache with --public-url %s behind config --nginx --tls-cert (wss://), or name "
                  "a server with --hashserv ADDRESS to accept that" % (url, ", ".join(descriptor["hashserv"]), url))


def signed_first(area, files):
    """files as two lists: the sstate objects, then the rest."""
    objects = [f for f in files if signatures.kind(cache_path(area, f[0])) == "object"]
    return [objects, [f for f in files if signatures.kind(cache_path(area, f[0])) != "object"]]


def signed_files(area, files, source):
    """The files to upload to a cache that requires signatures: each sstate
    object goes with its .sig (in the same request), which is not uploaded
    alone; Failure, before anything is sent, if an object has none."""
    if area != "sstate-cache":
        return files
    present = {rel for rel, _ in files}
    unsigned = [rel for rel, _ in files if signatures.kind(cache_path(area, rel)) == "object"
                and rel + SIG_SUFFIX not in present]
    if unsigned:
        raise Failure("the cache requires signed objects, and %d of the producer's have no .sig (%s%s) in %s: sign "
                      "them with SSTATE_SIG_KEY = \"KEYID\" and SSTATE_VERIFY_SIG = \"1\" (the key bound to this "
                      "token) and build again" % (len(unsigned), unsigned[0], ", ..." if len(unsigned) > 1 else "",
                                                  source))
    return [(rel, size) for rel, size in files if signatures.kind(cache_path(area, rel)) != "sig"]


def equivalence_route(bitbake, url, descriptor, reply, hashserv_address, equivalences, database):
    """Where the producer's equivalences go: None (not sent), (CACHE, the
    request's body: the cache merges them, and the token goes nowhere
    else), or (a Background importing bitbake's hashserv, the hash server's
    address) to report them to, as the token's user: when --hashserv names
    one, or the cache does not merge them (an older server), or they are
    more than a request carries. Failure before anything is uploaded if
    that hash server would get the token in the clear."""
    if not equivalences:
        return None
    if not hashserv_address and reply.get("equivalences") is True:
        body = json.dumps(equivalences_doc(*database)).encode()
        if len(body) <= MANIFEST_LIMIT:
            return CACHE, body
    address = hashserv_address or safe_hashserv(url, descriptor)
    # bitbake's hashserv (a quarter of a second to import: bb) loads while the files go.
    return Background(import_hashserv, bitbake), address


def send_equivalences(route, upload, name, secret, outhashes, unihashes, source, out):
    """The producer's equivalences, where equivalence_route() says: the
    producer's unihashes the cache answered with another one."""
    if route is None:
        out.write("equivalences: none sent (--no-equivalences)\n")
        return set()
    if route[0] == CACHE:   # the cache merges a build's thousands in seconds: as long as nginx waits (config --nginx)
        with contextlib.closing(Upload(upload.url, name, secret, timeout=MERGE_TIMEOUT)) as merging:
            counts = merging.request("POST", PREFIX + "equivalences", route[1], {"Content-Type": "application/json"})[1]
        out.write("equivalences: %d output hashes, %d unihashes merged by the cache at %s for %s from %s; %d taken "
                  "over by an equivalent output the cache already had\n" % (
                      counts["outhashes"], counts["unihashes"], upload.url, name, source, counts["remapped"]))
        return set(counts["superseded"])
    hashserv, address = route
    return report_equivalences(hashserv.result(), address, name, secret, outhashes, unihashes, source, out)


def report_equivalences(hashserv, address, name, secret, outhashes, unihashes, source, out):
    """The producer's equivalences, reported as the token's hashserv user."""
    try:
        counts = merge_database(hashserv, address, outhashes, unihashes, name, secret)
    except NoLogin as e:
        raise Failure("cannot log in to the cache's hash server %s as %s: %s" % (address, name, e))
    except Exception as e:   # hashserv's client raises what its transport raises
        raise Failure("the cache's hash server %s refused the equivalences of %s: %s" % (address, name, e))
    out.write("equivalences: %d output hashes, %d unihashes reported to %s as %s from %s; %d taken over by an "
              "equivalent output the cache already had\n" % (
                  counts["outhashes"], counts["unihashes"], address, name, source, counts["remapped"]))
    return counts["superseded"]
