# SPDX-License-Identifier: MIT

import pytest

from equivcache.rulebase import Settings
from equivcache.rules import RULE_NAMES, evaluate, probes_needed, select, unknown_rules

HTTP = "file://.* http://127.0.0.1:8888/sstate-cache/PATH;downloadfilename=PATH"
DESCRIPTOR = {"hashserv": ["127.0.0.1:8686"], "nativelsbstrings": ["debian-12", "universal"]}
ESDK = "file://universal/(.*) file://universal-4.9/\\1 file://universal-4.9/(.*) file://universal-4.8/\\1"


def equiv(**kw):
    """An OEEquivHash configuration, with changes."""
    base = dict(handler="OEEquivHash", handler_uses_server=True, hashserve="auto", nativelsbstring="debian-12")
    base.update(kw)
    return Settings(**base)


def rules(settings, probes=None, descriptor=None, error=None):
    return [f.rule for f in evaluate(settings, probes, descriptor, error)]


SPLIT = dict(topdir="/work/build", sstate_dir="/srv/sstate-cache", database="/work/build/cache/hashserv.db")
SHARED = dict(SPLIT, sstate_sharers=[("/work/other", "/work/other/cache/hashserv.db")])

# (name, settings, probes, descriptor, expected rules)
TABLE = [
    ("clean local", equiv(), {}, None, []),
    ("clean shared", equiv(sstate_mirrors=HTTP, upstream="127.0.0.1:8686"), {}, DESCRIPTOR, []),
    ("clean remote", equiv(hashserve="127.0.0.1:8686", sstate_mirrors=HTTP), {}, DESCRIPTOR, []),
    ("basic, no server", Settings(handler="OEBasicHash"), {}, None, []),
    # 1
    ("seed", equiv(sstate_mirrors=HTTP), {}, None, ["mirror-without-upstream"]),
    ("seed unix", equiv(hashserve="unix:///b/hashserve.sock", sstate_mirrors=HTTP), {}, None, ["mirror-without-upstream"]),
    ("file mirror", equiv(sstate_mirrors="file://.* file:///srv/s/PATH"), {}, None, ["mirror-without-upstream"]),
    # 11: the eSDK's remapping is not a mirror
    ("esdk remap", equiv(sstate_mirrors=ESDK), {}, None, []),
    # 2
    ("upstream ignored", equiv(hashserve="127.0.0.1:1", upstream="127.0.0.1:8686"), {}, None, ["upstream-ignored"]),
    ("upstream ignored unix", equiv(hashserve="unix:///s", upstream="h:1"), {}, None, ["upstream-ignored"]),
    # 3
    ("upstream away", equiv(upstream="127.0.0.1:9"), {("server", "127.0.0.1:9"): "refused"}, None, ["upstream-unreachable"]),
    # 4
    ("server away", equiv(hashserve="127.0.0.1:9"), {("server", "127.0.0.1:9"): "refused"}, None, ["server-unreachable"]),
    # 5
    ("no server", equiv(hashserve=""), {}, None, ["handler-without-server"]),
    ("server ignored", Settings(handler="OEBasicHash", hashserve="auto"), {}, None, ["server-without-handler"]),
    ("basic with published mirror", Settings(handler="OEBasicHash", sstate_mirrors=HTTP), {}, DESCRIPTOR,
     ["mirror-without-equivalence"]),
    ("basic with plain mirror", Settings(handler="OEBasicHash", sstate_mirrors=HTTP), {}, None, []),
    ("unknown handler", Settings(handler="OEEquivHsh", handler_exists=False), {}, None, ["unknown-handler"]),
    # 6
    ("no network", equiv(sstate_mirrors=HTTP, upstream="h:1", no_network=True), {}, None, ["no-network-mirror"]),
    ("no network allowed", equiv(sstate_mirrors=HTTP, upstream="h:1", no_network=True, mirror_allow_network=True), {}, None, []),
    ("no network file", equiv(sstate_mirrors="file://.* file:///s/PATH", upstream="h:1", no_network=True), {}, None, []),
    # 7
    ("odd words", equiv(sstate_mirrors="file://.*", upstream="h:1"), {}, None, ["mirror-syntax"]),
    ("no PATH", equiv(sstate_mirrors="file://.* http://h/s/", upstream="h:1"), {}, None, ["mirror-syntax"]),
    ("no downloadfilename is fine", equiv(sstate_mirrors="file://.* http://h/s/PATH", upstream="h:1"), {}, None, []),
    ("missing dir", equiv(sstate_mirrors="file://.* file:///nope/PATH", upstream="h:1"),
     {("dir", "/nope"): "No such file or directory"}, None, ["mirror-missing-dir"]),
    ("http away", equiv(sstate_mirrors=HTTP, upstream="h:1"),
     {("http", "http://127.0.0.1:8888/sstate-cache/"): "refused"}, None, ["mirror-unreachable"]),
    # 8
    ("websockets", equiv(hashserve="ws://h:1", websockets=False), {}, None, ["websockets-missing"]),
    ("websockets upstream", equiv(upstream="wss://h:1", websockets=False), {}, None, ["websockets-missing"]),
    ("websockets present", equiv(hashserve="ws://h:1"), {}, None, []),
    # 9
    ("other server", equiv(sstate_mirrors=HTTP, upstream="10.0.0.9:8686"), {}, DESCRIPTOR, ["descriptor-server-mismatch"]),
    ("other remote server", equiv(sstate_mirrors=HTTP, hashserve="10.0.0.9:8686"), {}, DESCRIPTOR, ["descriptor-server-mismatch"]),
    # 10
    ("other host", equiv(sstate_mirrors=HTTP, upstream="127.0.0.1:8686", nativelsbstring="fedora-40"), {}, DESCRIPTOR,
     ["native-lsb-mismatch"]),
    ("other host uninative", equiv(sstate_mirrors=HTTP, upstream="127.0.0.1:8686", nativelsbstring="fedora-40",
                                   uninative=True), {}, DESCRIPTOR, []),
    # publishing to a cache that requires signatures (the key ids it binds to the token)
    ("publish unsigned", equiv(publish_keyids=["AAAABBBBCCCCDDDD"]), {}, None, ["unsigned-publish"]),
    ("publish key without verify", equiv(publish_keyids=["AAAABBBBCCCCDDDD"], sig_key="AAAABBBBCCCCDDDD"), {}, None,
     ["unsigned-publish"]),
    ("publish other key", equiv(publish_keyids=["AAAABBBBCCCCDDDD"], sig_key="1111222233334444", verify_sig=True), {},
     None, ["unsigned-publish"]),
    ("publish no key bound", equiv(publish_keyids=[], sig_key="AAAABBBBCCCCDDDD", verify_sig=True), {}, None,
     ["unsigned-publish"]),
    ("publish signed", equiv(publish_keyids=["AAAABBBBCCCCDDDD"], sig_key="0x9999AAAABBBBCCCCDDDD", verify_sig=True),
     {}, None, []),
    ("publish to an unsigned cache", equiv(publish_keyids=None), {}, None, []),
    # one sstate directory, several databases
    ("shared sstate, private database", equiv(**SHARED), {}, None, ["shared-sstate-private-database"]),
    ("outside sstate, no other build", equiv(**SPLIT), {}, None, []),
    ("outside sstate, other build same database", equiv(**dict(SPLIT, sstate_sharers=[
        ("/work/build2", "/work/build/cache/hashserv.db")])), {}, None, []),
    ("outside sstate on nfs", equiv(**dict(SPLIT, sstate_filesystem="nfs4")), {}, None,
     ["shared-sstate-private-database"]),
    ("shared sstate, stock warns", equiv(stock_warns_shared_sstate=True, **SHARED), {}, None, []),
    ("shared sstate, shared database", equiv(**dict(SHARED, database="/srv/sstate-cache/hashserv.db")), {}, None, []),
    ("sstate inside", equiv(**dict(SHARED, sstate_dir="/work/build/sstate-cache")), {}, None, []),
    ("shared sstate, remote server", equiv(hashserve="h:1", **dict(SHARED, database="")), {}, None, []),
    ("prefix is not inside", equiv(**dict(SHARED, sstate_dir="/work/build2/sstate")), {}, None,
     ["shared-sstate-private-database"]),
    # a running bitbake server's auto server
    ("same auto server", equiv(upstream="h:1", database="/b/hashserv.db",
                               auto_server={"upstream": "h:1", "database": "/b/hashserv.db"}), {}, None, []),
    ("stale upstream", equiv(upstream="h:2", database="/b/hashserv.db",
                             auto_server={"upstream": "h:1", "database": "/b/hashserv.db"}), {}, None,
     ["stale-hash-server"]),
    ("stale database", equiv(database="/c/hashserv.db", auto_server={"upstream": "", "database": "/b/hashserv.db"}),
     {}, None, ["stale-hash-server"]),
    ("no longer auto", equiv(hashserve="h:1", auto_server={"upstream": "", "database": "/b/hashserv.db"}), {}, None,
     []),
]


@pytest.mark.parametrize("name, settings, probes, descriptor, expected", TABLE, ids=[t[0] for t in TABLE])
def test_table(name, settings, probes, descriptor, expected):
    assert rules(settings, probes, descriptor) == expected


def test_stale_hash_server_is_the_last_rule():
    """configcheck judges it again after the fixes and appends it: registry order holds only if it is last."""
    assert RULE_NAMES[-1] == "stale-hash-server"


def test_every_rule_is_in_the_table():
    covered = {r for t in TABLE for r in t[4]} | {"descriptor"}
    assert covered == set(RULE_NAMES)


def test_split_database_fix_per_release():
    """wrynose's bitbake reads BB_HASHSERVE_DB_DIR: the fix puts the database beside the objects;
    scarthgap's does not: no fix, and the message says what to do instead."""
    (f,) = evaluate(equiv(database_dir_variable=True, **SHARED))
    assert f.fixes == {"BB_HASHSERVE_DB_DIR": "/srv/sstate-cache"}
    (f,) = evaluate(equiv(**SHARED))
    assert f.fixes == {} and "PERSISTENT_DIR" in f.message and "BB_HASHSERVE_DB_DIR" not in f.message


def test_seed_message_and_fix_from_descriptor():
    (f,) = evaluate(equiv(sstate_mirrors=HTTP), {}, DESCRIPTOR)
    assert f.fixes == {"BB_HASHSERVE_UPSTREAM": "127.0.0.1:8686"}
    assert "http://127.0.0.1:8888/sstate-cache" in f.message
    assert 'Set BB_HASHSERVE_UPSTREAM = "127.0.0.1:8686".' in f.message
    assert str(f).startswith("[mirror-without-upstream] ")


def test_seed_without_descriptor_has_no_fix():
    (f,) = evaluate(equiv(sstate_mirrors=HTTP))
    assert f.fixes == {}


def test_fixes():
    def fixes(settings, probes=None, descriptor=None):
        return {k: v for f in evaluate(settings, probes, descriptor) for k, v in f.fixes.items()}
    assert fixes(equiv(sstate_mirrors=HTTP, upstream="h:1", no_network=True)) == {"SSTATE_MIRROR_ALLOW_NETWORK": "1"}
    assert fixes(equiv(hashserve="")) == {"BB_HASHSERVE": "auto"}
    assert fixes(equiv(hashserve="h:9"), {("server", "h:9"): "refused"}) == {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}
    assert fixes(equiv(handler="EquivCacheHash", hashserve="h:9"), {("server", "h:9"): "refused"}) == {}
    assert fixes(equiv(hashserve="h:9", stock_survives_outage=True), {("server", "h:9"): "refused"}) == \
        {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}
    assert fixes(equiv(sstate_mirrors=HTTP, upstream="10.0.0.9:1"), {}, DESCRIPTOR) == {"BB_HASHSERVE_UPSTREAM": "127.0.0.1:8686"}
    two = dict(DESCRIPTOR, hashserv=["127.0.0.1:9", "127.0.0.1:8686"])
    assert fixes(equiv(upstream="127.0.0.1:9"), {("server", "127.0.0.1:9"): "refused", ("server", "127.0.0.1:8686"): None},
                 two) == {"BB_HASHSERVE_UPSTREAM": "127.0.0.1:8686"}


YOCTO = "file://.* http://sstate.yoctoproject.org/all/PATH;downloadfilename=PATH"


@pytest.mark.parametrize("mirrors", [YOCTO, "file://.* https://cdn.jsdelivr.net/yocto/sstate/all/PATH"])
def test_public_cache_without_upstream_is_named_and_fixed(mirrors):
    """The sample local.conf's mirror without its upstream: no descriptor needed."""
    found = evaluate(equiv(sstate_mirrors=mirrors))
    assert [f.rule for f in found] == ["mirror-without-upstream"]
    assert "the Yocto Project's public sstate cache" in found[0].message
    assert found[0].fixes == {"BB_HASHSERVE_UPSTREAM": "wss://hashserv.yoctoproject.org/ws"}


@pytest.mark.parametrize("upstream", ["wss://hashserv.yoctoproject.org/ws", "hashserv.yoctoproject.org:8686",
                                      "hashserv.yocto.io:8687"])
def test_public_cache_with_its_upstream_is_clean(upstream):
    assert rules(equiv(sstate_mirrors=YOCTO, upstream=upstream)) == []


def test_public_cache_with_another_upstream():
    found = evaluate(equiv(sstate_mirrors=YOCTO, upstream="cache.example.com:8686"))
    assert [f.rule for f in found] == ["descriptor-server-mismatch"]
    assert "of the Yocto Project's public sstate cache" in found[0].message
    assert found[0].fixes == {"BB_HASHSERVE_UPSTREAM": "wss://hashserv.yoctoproject.org/ws"}


def test_known_caches_variable_and_descriptor_precedence():
    extra = "http://mirror.example.com/sstate=mirror.example.com:8686 not-a-pair"
    mirrors = "file://.* http://mirror.example.com/sstate/PATH"
    found = evaluate(equiv(sstate_mirrors=mirrors, known_caches=extra))
    assert found[0].fixes == {"BB_HASHSERVE_UPSTREAM": "mirror.example.com:8686"}
    assert rules(equiv(sstate_mirrors=mirrors, upstream="mirror.example.com:8686", known_caches=extra)) == []
    # A descriptor says more than the table.
    assert evaluate(equiv(sstate_mirrors=YOCTO), descriptor=DESCRIPTOR)[0].fixes == {
        "BB_HASHSERVE_UPSTREAM": "127.0.0.1:8686"}
    from equivcache.knowncaches import parse_extra
    assert parse_extra(extra)[1] == ['"not-a-pair" is not MIRROR_ROOT=HASHSERV']


def test_server_unreachable_says_what_the_release_does():
    """scarthgap's OEEquivHash aborts; wrynose's warns per task and saves its guesses."""
    away = {("server", "h:9"): "refused"}
    (old,) = evaluate(equiv(hashserve="h:9"), away)
    (new,) = evaluate(equiv(hashserve="h:9", stock_survives_outage=True), away)
    assert "with OEEquivHash the build aborts when it first asks the server" in old.message
    assert "with OEEquivHash every task warns, and the unihashes guessed meanwhile are saved" in new.message
    assert "aborts" not in new.message


def test_descriptor_error_is_one_finding():
    assert rules(equiv(), {}, None, "HTTP Error 404") == ["descriptor"]


def test_probes_needed():
    # In the order of the rules that read them: upstream-unreachable, mirror-missing-dir, mirror-unreachable.
    assert probes_needed(equiv(sstate_mirrors=HTTP + " file://.* file:///srv/s/PATH", upstream="h:1")) == [
        ("server", "h:1"), ("dir", "/srv/s"), ("http", "http://127.0.0.1:8888/sstate-cache/")]
    assert probes_needed(equiv(hashserve="h:2")) == [("server", "h:2")]
    assert probes_needed(equiv(sstate_mirrors=ESDK)) == []
    assert probes_needed(Settings(handler="OEBasicHash", hashserve="h:2")) == []


def test_select_and_unknown():
    found = evaluate(equiv(sstate_mirrors=HTTP + " file://.*"))
    assert [f.rule for f in found] == ["mirror-without-upstream", "mirror-syntax"]
    assert [f.rule for f in select(found, ["mirror-syntax"])] == ["mirror-without-upstream"]
    assert unknown_rules(["mirror-syntax", "no-such-rule"]) == ["no-such-rule"]


def test_messages_are_one_line_and_name_values():
    for name, settings, probes, descriptor, expected in TABLE:
        for f in evaluate(settings, probes, descriptor):
            assert "\n" not in f.message, name
            assert f.message.rstrip().endswith("."), (name, f.message)


def guide():
    import os
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "user-guide", "checks.md")) as f:
        return f.read()


def test_guide_rule_table_is_the_registry():
    """The user guide's rule table lists every registered rule, in the registry's order (the
    reference, docs/reference/rules.md, is generated from the registry itself)."""
    import re
    section = guide().split("## The rules\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| `([a-z-]+)` \|", section, re.MULTILINE) == list(RULE_NAMES)


def test_examples_in_registry_order():
    from rule_examples import EXAMPLES
    assert list(EXAMPLES) == list(RULE_NAMES)


def example_messages():
    from rule_examples import EXAMPLES
    messages = {}
    for rule, (settings, probes, descriptor, error) in EXAMPLES.items():
        messages[rule] = [str(f) for f in evaluate(settings, probes, descriptor, error) if f.rule == rule]
    return messages


def test_every_rule_has_an_example():
    assert {r for r, m in example_messages().items() if len(m) == 1} == set(RULE_NAMES)
