# SPDX-License-Identifier: MIT
#
# equivcache.configcheck, the configuration checks of equivcache.bbclass, on real
# bitbake datastores and bitbake's own handler registry and address parser.


import pytest

from conftest import need_bitbake

need_bitbake()

import importlib  # noqa: E402
import os  # noqa: E402

import bb.data  # noqa: E402
import bb.fetch2  # noqa: E402

# Imported for what they register in bb.siggen: OEBasicHash, OEEquivHash, EquivCacheHash.
for module in ("oe.sstatesig", "equivcache.siggen"):
    importlib.import_module(module)

from equivcache import cachedescriptor  # noqa: E402
from equivcache import configcheck as check  # noqa: E402

DOC = {"hashserv": ["127.0.0.1:8686"], "sstate": "sstate-cache", "downloads": "downloads"}


def datastore(tmp_path, **values):
    d = bb.data.init()
    d.setVar("PERSISTENT_DIR", str(tmp_path / "persistent"))
    for k, v in values.items():
        d.setVar(k, v)
    return d


@pytest.mark.parametrize("name, expected", [
    ("OEEquivHash", (True, True)),
    ("EquivCacheHash", (True, True)),
    ("OEBasicHash", (True, False)),
    ("noop", (True, False)),
    ("OEEquivHsh", (False, False)),
])
def test_handler_info_by_class(name, expected):
    assert check.handler_info(name) == expected


@pytest.mark.parametrize("address, expected", [
    ("unix:///b/hashserve.sock", ("unix", "/b/hashserve.sock")),
    ("cache:8686", ("tcp", "cache", 8686)),
    ("[::1]:8686", ("tcp", "::1", 8686)),
    ("ws://cache:8687", ("ws", "cache", 8687, False)),
    ("wss://cache", ("ws", "cache", 443, True)),
])
def test_parse_server(address, expected):
    assert check.parse_server(address) == expected


def test_gather(tmp_path):
    d = datastore(tmp_path, SSTATE_MIRRORS="file://.* file:///m/PATH", BB_HASHSERVE="auto",
                  BB_SIGNATURE_HANDLER="EquivCacheHash", BB_NO_NETWORK="1", INHERIT="sanity uninative",
                  NATIVELSBSTRING="debian-12")
    s = check.gather(d)
    assert (s.handler, s.handler_exists, s.handler_uses_server) == ("EquivCacheHash", True, True)
    assert s.no_network and not s.mirror_allow_network and s.uninative
    assert s.hashserve == "auto" and s.upstream == "" and s.nativelsbstring == "debian-12"


def test_configure_client_from_nothing(tmp_path):
    d = datastore(tmp_path, BB_NO_NETWORK="1")
    changes = check.configure_client(d, "http://cache:8080", DOC)
    assert changes["SSTATE_MIRRORS"] == "file://.* http://cache:8080/sstate-cache/PATH;downloadfilename=PATH"
    assert changes["BB_SIGNATURE_HANDLER"] == "EquivCacheHash"
    assert changes["BB_HASHSERVE"] == "auto"
    assert changes["BB_HASHSERVE_UPSTREAM"] == "127.0.0.1:8686"
    assert changes["SSTATE_MIRROR_ALLOW_NETWORK"] == "1"
    assert "git://.*/.* http://cache:8080/downloads/" in changes["PREMIRRORS"]
    # Only schemes this bitbake fetches: wrynose's has no cvs fetcher, and its sanity check warns.
    has_cvs = os.path.exists(os.path.join(os.path.dirname(bb.fetch2.__file__), "cvs.py"))
    assert ("cvs://.*/.* http://cache:8080/downloads/" in changes["PREMIRRORS"]) == has_cvs


def test_configure_client_keeps_user_values(tmp_path):
    d = datastore(tmp_path, SSTATE_MIRRORS="file://.* file:///mine/PATH", BB_SIGNATURE_HANDLER="EquivCacheHash",
                  BB_HASHSERVE="cache:9999", PREMIRRORS="git://.*/.* http://cache:8080/downloads/")
    assert check.configure_client(d, "http://cache:8080", DOC) == {}


def test_configure_client_upgrades_oeequivhash(tmp_path):
    """OEEquivHash (wrynose's default) becomes EquivCacheHash: the same signatures, and the build report."""
    d = datastore(tmp_path, SSTATE_MIRRORS="file://.* file:///mine/PATH", BB_SIGNATURE_HANDLER="OEEquivHash",
                  BB_HASHSERVE="cache:9999", PREMIRRORS="git://.*/.* http://cache:8080/downloads/")
    assert check.configure_client(d, "http://cache:8080", DOC) == {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}


def test_workers_repeat_the_cooker_changes(tmp_path):
    cooker = datastore(tmp_path, EQUIVCACHE_SERVER="http://cache:8080")
    key = check.fingerprint(cooker)
    check.save(cooker, key, {"BB_HASHSERVE_UPSTREAM": "127.0.0.1:8686"})
    worker = datastore(tmp_path, EQUIVCACHE_SERVER="http://cache:8080")
    check.apply_saved(worker)
    assert worker.getVar("BB_HASHSERVE_UPSTREAM") == "127.0.0.1:8686"
    other = datastore(tmp_path, EQUIVCACHE_SERVER="http://other:8080")
    check.apply_saved(other)
    assert other.getVar("BB_HASHSERVE_UPSTREAM") is None


def test_descriptor_locations(tmp_path):
    d = datastore(tmp_path, SSTATE_MIRRORS="file://.* http://h:1/sstate-cache/PATH;downloadfilename=PATH "
                                           "file://.* file:///srv/cache/sstate/PATH "
                                           "file://universal/(.*) file://universal-4.9/\\1")
    assert cachedescriptor.descriptor_locations(d, "") == ["http://h:1/equivcache.json", "file:///srv/cache/equivcache.json"]
    assert cachedescriptor.descriptor_locations(d, "http://cache:8080/") == ["http://cache:8080/equivcache.json"]


def test_saved_changes_per_configuration(tmp_path):
    # Multiconfigs share PERSISTENT_DIR: each configuration keeps its own entry.
    a = datastore(tmp_path, MACHINE="a", EQUIVCACHE_SERVER="http://a:1")
    b = datastore(tmp_path, MACHINE="b", EQUIVCACHE_SERVER="http://b:1")
    check.save(a, check.fingerprint(a), {"BB_HASHSERVE_UPSTREAM": "a:8686"})
    check.save(b, check.fingerprint(b), {"BB_HASHSERVE_UPSTREAM": "b:8686"})
    for d, expected in ((datastore(tmp_path, EQUIVCACHE_SERVER="http://a:1"), "a:8686"),
                        (datastore(tmp_path, EQUIVCACHE_SERVER="http://b:1"), "b:8686")):
        check.apply_saved(d)
        assert d.getVar("BB_HASHSERVE_UPSTREAM") == expected
    for i in range(20):
        d = datastore(tmp_path, EQUIVCACHE_SERVER="http://x%d:1" % i)
        check.save(d, check.fingerprint(d), {})
    assert len(check.load_applied(a)) == 16


def test_reports_once_per_cooker_until_a_build_completes(tmp_path):
    d = datastore(tmp_path)
    report = ("fingerprint", [], ["[mirror-syntax] ..."])
    assert check.first_report(d, report) is True
    assert check.first_report(d, report) is False        # bitbake -e parses three times
    assert check.first_report(d, ("fingerprint", [], [])) is True
    check.forget_reports(d)                               # BuildCompleted
    assert check.first_report(d, report) is True


@pytest.mark.parametrize("name, value", [("EQUIVCACHE_REPORT_TO", "cache.example.com:8080"),
                                         ("EQUIVCACHE_PUBLISH", "ftp://cache.example.com/"),
                                         ("EQUIVCACHE_REPORT_TO", "http://")])
def test_bad_report_and_publish_urls_stop_the_parse(tmp_path, name, value, caplog):
    d = datastore(tmp_path, TOPDIR=str(tmp_path), **{name: value})
    with pytest.raises(bb.BBHandledException):
        check.on_config_parsed(d)
    assert '%s = "%s" must be the http(s):// URL of a cache server' % (name, value) in caplog.text
