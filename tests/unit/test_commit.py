# SPDX-License-Identifier: MIT
#
# The commit of uploads (server/store/cache.py: Cache.kept_listing): serve's
# process lists the cache's areas at its first commit only, then adds what
# it received and what each publish names, and lists them again whenever
# another writer (gc, a local publish, another replica) committed since.
# Real files in a directory; two Cache objects on it are two processes.

import hashlib
import io
import json
import os

from equivcache.server.store import open_cache


def name(n):
    unihash = hashlib.sha256(b"%d" % n).hexdigest()
    return "sstate-cache/%s/%s/sstate:r%d::1.0:r0::12:%s_populate_sysroot.tar.zst" % (
        unihash[:2], unihash[2:4], n, unihash)


def receive(cache, n, body=b"object"):
    """An upload of object n, as serve's batch stores it: (cache path, size), as publish names it."""
    cache.receive(name(n), io.BytesIO(body), len(body), hashlib.sha256(body).hexdigest())
    return name(n), len(body)


def indexed(cache_dir):
    with open(os.path.join(cache_dir, "index.json")) as f:
        return {"sstate-cache/" + o["path"] for o in json.load(f)["objects"] if o["path"]}


def counting_listings(cache):
    """The areas the cache's storage lists from now on, in order."""
    listed, files = [], cache.storage.files

    def counted(area):
        if area in ("sstate-cache", "siginfo"):
            listed.append(area)
        return files(area)
    cache.storage.files = counted
    return listed


def test_commits_of_uploads_list_the_cache_once(tmp_path):
    cache_dir = str(tmp_path / "cache")
    serve = open_cache(cache_dir, create=True)
    listed = counting_listings(serve)
    serve.commit(set(), 0, files=[receive(serve, 0)])
    assert listed == ["sstate-cache", "siginfo"] and indexed(cache_dir) == {name(0)}

    # What it received since, and what the publish names but another replica stored, without listing.
    replica = open_cache(cache_dir)
    files = [receive(serve, 1), receive(replica, 2), (name(0), 6)]
    serve.commit(set(), 0, files=files)
    assert listed == ["sstate-cache", "siginfo"] and indexed(cache_dir) == {name(n) for n in range(3)}

    # A named file the listing lacks, or holds at another size, is as the storage has it: absent, not indexed.
    replica.storage.remove(name(2))
    serve.commit(set(), 0, files=[receive(serve, 3), (name(9), 6)])
    assert listed == ["sstate-cache", "siginfo"] and indexed(cache_dir) == {name(n) for n in (0, 1, 2, 3)}

    # Another writer committed meanwhile (gc, or a local publish: it names no files): the next commit lists
    # again, and sees what that one saw.
    receive(replica, 4)
    replica.commit(set(), 0)
    assert indexed(cache_dir) == {name(n) for n in (0, 1, 3, 4)}
    serve.commit(set(), 0, files=[receive(serve, 5)])
    assert listed == ["sstate-cache", "siginfo"] * 2
    assert indexed(cache_dir) == {name(n) for n in (0, 1, 3, 4, 5)}

    # ...and from there on adds to that listing; a commit that names no files lists.
    serve.commit(set(), 0, files=[receive(serve, 6)])
    assert listed == ["sstate-cache", "siginfo"] * 2
    serve.commit(set(), 0)
    assert listed == ["sstate-cache", "siginfo"] * 3
    assert indexed(cache_dir) == {name(n) for n in (0, 1, 3, 4, 5, 6)}
    # The sstate index says the same as a listing would.
    assert open_cache(cache_dir).commit(set(), 0)["sstate_index"] == 6
