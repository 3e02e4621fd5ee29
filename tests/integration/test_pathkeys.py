# SPDX-License-Identifier: MIT
#
# The sstate index (lib/equivcache/pathkeys.py) as publish writes it and a
# build reads it: over file:// and over the cache's real http mirror, whose
# requests are counted; appends caught up with one range request; a new
# generation when files go; every unusable index refused with a reason.

import json
import os

import pytest

from equivcache import pathkeys
from equivcache.server.store.local import update_sstate_index
from oeqa.utils.equivcache import HttpMirror

NAMES = ["universal/ab/cd/sstate:a::1:r0::3:%s_populate_lic.tar.zst" % ("0" * 64),
         "fedora-40/12/34/sstate:b-native:x86_64-linux:1:r0:x86_64:11:%s_populate_sysroot.tar.zst" % ("1" * 64),
         "fedora-40/12/34/sstate:b-native:x86_64-linux:1:r0:x86_64:11:%s_populate_sysroot.tar.zst.siginfo" % ("1" * 64)]


def add(cache, *names):
    for name in names:
        path = os.path.join(cache, "sstate-cache", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()


def update(cache):
    return update_sstate_index(cache)


def has(fetched, name):
    return pathkeys.key_int(name) in set(fetched.keys)


@pytest.fixture
def cache(tmp_path):
    root = str(tmp_path / "cache")
    add(root, *NAMES)
    return root


@pytest.fixture
def mirror(cache):
    server = HttpMirror(cache)
    yield server
    server.close()


def test_file_mirror(cache):
    assert update(cache) == (3, 3, True)
    fetched = pathkeys.load("file://%s/sstate-cache" % cache, None, 2)
    assert all(has(fetched, n) for n in NAMES)
    assert not has(fetched, NAMES[0].replace("0" * 64, "2" * 64))
    assert fetched.requests == 0


def test_http_requests_and_catch_up(cache, mirror, tmp_path):
    update(cache)
    local = str(tmp_path / "client")
    root = mirror.url + "/sstate-cache"
    first = pathkeys.load(root, local, 2)
    assert (first.requests, len(mirror.requests)) == (2, 2)
    assert all(has(first, n) for n in NAMES)

    # Unchanged: one small answer, the head.
    again = pathkeys.load(root, local, 2)
    assert again.requests == 1 and mirror.requests[-1] == ("GET", "/sstate-index/head.json")
    assert list(again.keys) == list(first.keys)

    # 1000 files published: their keys only, with one range request.
    more = ["universal/%02x/00/sstate:n%d::1:r0::3:%s_fetch.tar.zst" % (i % 256, i, "3" * 64) for i in range(1000)]
    add(cache, *more)
    entries, added, rewritten = update(cache)
    assert (entries, added, rewritten) == (1003, 1000, False)
    caught_up = pathkeys.load(root, local, 2)
    head_size = os.path.getsize(os.path.join(cache, "sstate-index", "head.json"))
    assert caught_up.requests == 2
    assert caught_up.received == head_size + 1000 * pathkeys.KEY_SIZE
    assert all(has(caught_up, n) for n in NAMES + more)


def test_new_generation_when_files_go(cache, mirror, tmp_path):
    update(cache)
    local = str(tmp_path / "client")
    root = mirror.url + "/sstate-cache"
    before = pathkeys.load(root, local, 2)
    os.unlink(os.path.join(cache, "sstate-cache", NAMES[0]))
    assert update(cache) == (2, 0, True)
    after = pathkeys.load(root, local, 2)
    assert after.head["generation"] != before.head["generation"]
    assert not has(after, NAMES[0]) and has(after, NAMES[1])
    # The previous journal stays for readers half-way through it.
    assert len([n for n in os.listdir(os.path.join(cache, "sstate-index")) if n.startswith("journal-")]) == 2


def test_interrupted_append_is_overwritten(cache):
    update(cache)
    index_dir = os.path.join(cache, "sstate-index")
    head = json.load(open(os.path.join(index_dir, "head.json")))
    with open(os.path.join(index_dir, head["journal"]), "ab") as f:
        f.write(b"\xff" * 5)
    add(cache, "universal/00/00/sstate:z::1:r0::3:%s_fetch.tar.zst" % ("4" * 64))
    assert update(cache) == (4, 1, False)
    assert os.path.getsize(os.path.join(index_dir, head["journal"])) == 4 * pathkeys.KEY_SIZE


def test_no_index_is_quiet(tmp_path, mirror):
    with pytest.raises(pathkeys.Unavailable) as e:
        pathkeys.load(mirror.url + "/sstate-cache", str(tmp_path / "client"), 2)
    assert e.value.quiet


@pytest.mark.parametrize("change, reason", [
    (lambda head: dict(head, version=2), "newer than this layer reads"),
    (lambda head: dict(head, format="other"), "not an equivcache sstate index"),
    (lambda head: dict(head, entries=head["entries"] + 1), "counts 4"),
    (lambda head: dict(head, directory="sstate"), "not sstate-cache/"),
    (lambda head: "{not json", "not JSON"),
])
def test_unusable_index_is_refused_with_a_reason(cache, mirror, tmp_path, change, reason):
    update(cache)
    path = os.path.join(cache, "sstate-index", "head.json")
    head = change(json.load(open(path)))
    with open(path, "w") as f:
        f.write(head if isinstance(head, str) else json.dumps(head))
    with pytest.raises(pathkeys.Unavailable) as e:
        pathkeys.load(mirror.url + "/sstate-cache", str(tmp_path / "client"), 2)
    assert reason in str(e.value) and not e.value.quiet


def test_unreachable_mirror(tmp_path):
    from oeqa.utils.equivcache import free_port
    with pytest.raises(pathkeys.Unavailable) as e:
        pathkeys.load("http://127.0.0.1:%d/sstate-cache" % free_port(), str(tmp_path / "client"), 2)
    assert not e.value.quiet
