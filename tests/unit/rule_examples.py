# SPDX-License-Identifier: MIT
#
# One example configuration per rule: the documentation's rules reference
# (docs/reference/rules.md) shows the message each gives, generated from
# these, and test_rules checks that each gives exactly one.

from equivcache.rulebase import Settings

MIRROR = "file://.* http://cache:8080/sstate-cache/PATH;downloadfilename=PATH"
DESCRIPTOR = {"hashserv": ["cache:8686"], "nativelsbstrings": ["debian-12"]}


def equiv(**kw):
    base = dict(handler="OEEquivHash", handler_uses_server=True, hashserve="auto", nativelsbstring="debian-12")
    base.update(kw)
    return Settings(**base)


# rule: (settings, probes, descriptor, descriptor error)
EXAMPLES = {
    "unknown-handler": (Settings(handler="OEEquivHsh", handler_exists=False), {}, None, None),
    "handler-without-server": (equiv(hashserve=""), {}, None, None),
    "server-without-handler": (Settings(handler="OEBasicHash", hashserve="auto"), {}, None, None),
    "mirror-without-equivalence": (Settings(handler="OEBasicHash", sstate_mirrors=MIRROR), {}, DESCRIPTOR, None),
    "mirror-without-upstream": (equiv(sstate_mirrors=MIRROR), {}, DESCRIPTOR, None),
    "upstream-ignored": (equiv(hashserve="cache:8686", upstream="cache:8686"), {}, None, None),
    "upstream-unreachable": (equiv(upstream="cache:8686"), {("server", "cache:8686"): "ConnectionRefusedError: [Errno 111] Connection refused"}, None, None),
    "server-unreachable": (equiv(hashserve="cache:8686"), {("server", "cache:8686"): "ConnectionRefusedError: [Errno 111] Connection refused"}, None, None),
    "no-network-mirror": (equiv(sstate_mirrors=MIRROR, upstream="cache:8686", no_network=True), {}, None, None),
    "mirror-syntax": (equiv(sstate_mirrors="file://.* http://cache:8080/sstate-cache/PATH file://.*", upstream="cache:8686"), {}, None, None),
    "mirror-missing-dir": (equiv(sstate_mirrors="file://.* file:///srv/sstate/PATH", upstream="cache:8686"), {("dir", "/srv/sstate"): "no such directory"}, None, None),
    "mirror-unreachable": (equiv(sstate_mirrors=MIRROR, upstream="cache:8686"), {("http", "http://cache:8080/sstate-cache/"): "ConnectionRefusedError: [Errno 111] Connection refused"}, None, None),
    "websockets-missing": (equiv(hashserve="ws://cache:8687", websockets=False), {}, None, None),
    "descriptor": (equiv(), {}, None, "http://cache:8080/equivcache.json: HTTP 404 Not Found"),
    "descriptor-server-mismatch": (equiv(sstate_mirrors=MIRROR, upstream="other:8686"), {}, DESCRIPTOR, None),
    "native-lsb-mismatch": (equiv(sstate_mirrors=MIRROR, upstream="cache:8686", nativelsbstring="fedora-40"), {}, DESCRIPTOR, None),
    "unsigned-publish": (equiv(publish_keyids=["B7EA6B03A5CEBC3B"]), {}, None, None),
    "shared-sstate-private-database": (equiv(topdir="/work/build", sstate_dir="/srv/sstate-cache", database="/work/build/cache/hashserv.db", database_dir_variable=True, sstate_sharers=[("/work/build-arm", "/work/build-arm/cache/hashserv.db")]), {}, None, None),
    "stale-hash-server": (equiv(upstream="cache:8686", topdir="/work/build", database="/work/build/cache/hashserv.db", auto_server={"upstream": "", "database": "/work/build/cache/hashserv.db"}), {}, None, None),
}
