# SPDX-License-Identifier: MIT
#
# A cache a security team signs off, against a real equivcache-server serve
# (one per module, --require-signatures --reports-need-token) with its real
# bitbake-hashserv and real gpg: every refusal of the threat model (unsigned,
# signed by another key, a producer without a key, a lone signature, an
# expired, revoked or wrong-role token, a report without a token), each
# with nothing written and the message the docs' threat model quotes; and
# what is taken, verifiable by a consumer's gpg.

import contextlib
import glob
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import need_bitbake
from oeqa.utils.equivcache import SERVER, CacheServer
from oeqa.utils.equivcache_services import gpg, kill_agents, make_key

need_bitbake()

import bb.asyncrpc  # noqa: E402
import hashserv  # noqa: E402
from test_server import h, make_producer  # noqa: E402
from test_uploads import cache_files, request  # noqa: E402


def run(*args, env=None):
    return subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True, timeout=120, env=env)


def producer(directory, prefix, home=None):
    """A producer build of two objects, each signed by the key in home (as SSTATE_SIG_KEY signs) if given."""
    make_producer(directory, [(h(prefix + str(i)), h("o" + prefix + str(i)), h("u" + prefix + str(i)), "a",
                               "do_install") for i in range(2)])
    objects = glob.glob(os.path.join(directory, "sstate-cache", "*", "*", "*.tar.zst"))
    for path in objects if home else ():
        gpg(home, "--detach-sign", "-o", path + ".sig", path)
    return directory, sorted(objects)


def token(cache_dir, tmp, name, *args):
    result = run("token", "add", name, cache_dir, *args)
    assert result.returncode == 0, result
    path = os.path.join(tmp, name + ".token")
    with open(path, "w") as f:
        f.write(result.stdout)
    os.chmod(path, 0o600)
    return path, result.stdout.strip()


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A served cache that requires signatures and tokens on reports, its tokens and two producer keys."""
    tmp = str(tmp_path_factory.mktemp("signed"))
    cache_dir = os.path.join(tmp, "cache")
    key_a, key_b = make_key(os.path.join(tmp, "key-a"), "a"), make_key(os.path.join(tmp, "key-b"), "b")
    tokens = {"ci-a": token(cache_dir, tmp, "ci-a", "--gpg-key", key_a[1]),
              "ci-nokey": token(cache_dir, tmp, "ci-nokey"),
              "pr": token(cache_dir, tmp, "pr", "--role", "reporter"),
              "look": token(cache_dir, tmp, "look", "--role", "reader"),
              "old": token(cache_dir, tmp, "old", "--expires", "0.00001"),
              "gone": token(cache_dir, tmp, "gone")}
    assert run("token", "revoke", "gone", cache_dir).returncode == 0
    time.sleep(1)   # "old" (0.86 s) has expired before serve starts: its hash server user goes at once
    server = CacheServer(cache_dir, extra=["--require-signatures", "--reports-need-token"])
    yield {"server": server, "tmp": tmp, "a": key_a, "b": key_b, "tokens": tokens}
    server.stop()
    kill_agents(key_a[0], key_b[0])


def test_signed_objects_taken_and_verifiable(signed):
    """Objects signed by the token's key are taken with their .sig; the descriptor lists the key by the
    long key id OE-core's SSTATE_VALID_SIGS matches, and the mirror serves the public key."""
    server, tmp = signed["server"], signed["tmp"]
    directory, objects = producer(os.path.join(tmp, "p-signed"), "s", signed["a"][0])
    result = run("publish", "--from", directory, "--to", server.url, "--token-file", signed["tokens"]["ci-a"][0])
    assert result.returncode == 0 and "sstate: 4 files uploaded" in result.stdout, result
    with open(os.path.join(server.cache_dir, "equivcache.json")) as f:
        keys = json.load(f)["signatures"]
    assert keys["required"] and [k["producer"] for k in keys["keys"]] == ["ci-a"], keys
    assert keys["keys"][0]["fingerprint"] == signed["a"][2] and keys["keys"][0]["keyids"] == [signed["a"][2][-16:]]
    status, public = request(server, "GET", "/keys/ci-a.asc")
    assert status == 200 and public.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    consumer = os.path.join(tmp, "consumer-gnupg")
    os.makedirs(consumer, mode=0o700)
    gpg(consumer, "--import", os.path.join(tmp, "key-a.asc"))
    for path in objects:
        rel = "sstate-cache/" + os.path.relpath(path, os.path.join(directory, "sstate-cache"))
        status, body = request(server, "GET", "/" + urllib.parse.quote(rel + ".sig"))
        assert status == 200
        with open(os.path.join(tmp, "object.sig"), "wb") as f:
            f.write(body)
        status = gpg(consumer, "--status-fd", "1", "--verify", os.path.join(tmp, "object.sig"),
                     os.path.join(server.cache_dir, rel)).stdout.decode()
        assert "GOODSIG %s" % signed["a"][2][-16:] in status
    assert "consistent" in run("check", server.cache_dir).stdout


@pytest.mark.parametrize("case, key, name, status, message", [
    ("unsigned", None, "ci-a", 1, "the cache requires signed objects, and 2 of the producer's have no .sig"),
    ("other key", "b", "ci-a", 1, "does not verify against producer ci-a's key"),
    ("no key bound", "a", "ci-nokey", 1, "token 'ci-nokey' has no signing key bound"),
    ("reporter", "a", "pr", 1, "token 'pr' is a reporter's: uploads need a producer token"),
    ("reader", "a", "look", 1, "token 'look' is a reader's: uploads need a producer token"),
    ("expired", "a", "old", 1, "token 'old' is expired on"),
    ("revoked", "a", "gone", 1, "token 'gone' is revoked on"),
])
def test_refused_uploads_write_nothing(signed, case, key, name, status, message):
    """Each refused publish says why, and the cache holds nothing of it."""
    server, tmp = signed["server"], signed["tmp"]
    directory, objects = producer(os.path.join(tmp, "p-" + case.replace(" ", "-")), case,
                                  signed[key][0] if key else None)
    before = cache_files(server.cache_dir)
    result = run("publish", "--from", directory, "--to", server.url, "--token-file", signed["tokens"][name][0])
    assert result.returncode == status and message in result.stderr, result
    assert cache_files(server.cache_dir) == before


def test_refused_requests(signed):
    """Requests a client of ours never makes: a lone signature, an object without one, a report without
    a token or with a reader's; a reporter's and a producer's report are taken."""
    server = signed["server"]
    secret = signed["tokens"]["ci-a"][1]
    rel = "sstate-cache/ab/cd/sstate:a::1.0:r0::12:abcd%s_install.tar.zst" % ("0" * 60)
    for path, answer, text in ((rel + ".sig", 409, "takes a signature with its object only"),
                               (rel, 400, "this cache requires signed objects: send its .sig")):
        status, body = request(server, "PUT", "/upload/v1/" + urllib.parse.quote(path), b"x", token=secret,
                               headers={"X-Equivcache-SHA256": hashlib.sha256(b"x").hexdigest()})
        assert (status, text in json.loads(body)["error"]) == (answer, True), body
        assert not os.path.exists(os.path.join(server.cache_dir, path))
    for who, answer in ((None, 401), ("look", 403), ("old", 401), ("pr", 400), ("ci-a", 400)):
        status, body = request(server, "POST", "/api/v1/reports", b"{}",
                               token=signed["tokens"][who][1] if who else None)
        assert status == answer, (who, body)


def test_hash_server_users_follow_tokens(signed):
    """A producer's user may report equivalences; a reporter's and a reader's only read; an expired or
    revoked token's user is gone."""
    server = signed["server"]
    for name, can_report in (("ci-a", True), ("pr", False), ("look", False)):
        user, secret = signed["tokens"][name][1].split(":", 1)
        with contextlib.closing(hashserv.create_client(server.hashserv, user, secret)) as client:
            client.get_unihash("equivcache.test", h("nothing"))
            if can_report:
                client.report_unihash_equiv(h("t-" + name), "equivcache.test", h("u-" + name))
                assert client.get_unihash("equivcache.test", h("t-" + name)) == h("u-" + name)
            else:   # report() answers without storing; report-equiv is refused
                with pytest.raises(bb.asyncrpc.InvokeError):
                    client.report_unihash_equiv(h("t-" + name), "equivcache.test", h("u-" + name))
    for name in ("old", "gone"):
        user, secret = signed["tokens"][name][1].split(":", 1)
        with pytest.raises(Exception):
            with contextlib.closing(hashserv.create_client(server.hashserv, user, secret)) as client:
                client.get_unihash("equivcache.test", h("nothing"))


def test_local_publish_checks_signatures(signed):
    """A local publish to a signed cache copies the objects a trusted key signed, refuses the others
    (status 1, not copied, with their signature data), and says why."""
    server, tmp = signed["server"], signed["tmp"]
    directory, objects = producer(os.path.join(tmp, "p-local"), "l", signed["a"][0])
    os.remove(objects[0] + ".sig")
    result = run("publish", "--from", directory, server.cache_dir)
    assert result.returncode == 1, result
    assert "sstate: 1 objects refused, not copied" in result.stdout and "no key of its producers" in result.stdout
    name = os.path.basename(objects[0])
    assert not [f for f in cache_files(server.cache_dir) if os.path.basename(f).startswith(name)]
    assert [f for f in cache_files(server.cache_dir) if os.path.basename(f) == os.path.basename(objects[1]) + ".sig"]


def test_token_list(signed):
    result = run("token", "list", signed["server"].cache_dir)
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "producer" in lines["ci-a"] and "key " + signed["a"][2] in lines["ci-a"], result.stdout
    assert "last used 20" in lines["ci-a"] and "last used never" in lines["gone"]
    assert "reporter" in lines["pr"] and "  active" in lines["pr"]
    assert "expired 20" in lines["old"] and "revoked 20" in lines["gone"]
