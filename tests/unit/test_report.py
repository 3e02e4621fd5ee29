# SPDX-License-Identifier: MIT
#
# The build report's logic (lib/equivcache/report.py): counting, classifying
# misses, the document against its JSON Schema, and the summary line.

import json
import os

import jsonschema
import pytest

from equivcache import report
from equivcache.catalog import unihashes_by_task

H = {name: (name * 64)[:64] for name in "abcdef"}


def entry(recipe, task, where, unihash, taskhash=None, path=""):
    return {"recipe": recipe, "task": task, "unihash": unihash, "taskhash": taskhash or unihash,
            "where": where, "path": path}


@pytest.fixture
def schema():
    with open(report.SCHEMA) as f:
        return json.load(f)


def record_with_misses():
    r = report.BuildRecord("20261121120000", ["equivcache-c-native"], started=1000.0)
    r.sstate_checked({
        "a:do_populate_sysroot": entry("a", "do_populate_sysroot", "local", H["a"]),
        "b:do_populate_sysroot": entry("b", "do_populate_sysroot", "mirror", H["b"]),
        "c:do_populate_sysroot": entry("c", "do_populate_sysroot", "missed", H["c"]),
        "d:do_populate_sysroot": entry("d", "do_populate_sysroot", "missed", H["d"]),
        "e:do_populate_sysroot": entry("e", "do_populate_sysroot", "missed", H["e"]),
        "f:do_populate_lic": entry("f", "do_populate_lic", "mirror", H["f"]),
    })
    r.unihashes_guessed(["e:do_populate_sysroot"])
    r.unihash_error()
    r.scene_task_failed("f:do_populate_lic")
    return r


def test_misses_classified():
    r = record_with_misses()
    index = unihashes_by_task({"objects": [
        {"recipe": "c", "task": "do_populate_sysroot", "unihash": H["f"], "path": "x", "siginfo": ""},
        {"recipe": "d", "task": "do_populate_lic", "unihash": H["a"], "path": "y", "siginfo": ""},
        {"recipe": "d", "task": "do_populate_sysroot", "unihash": H["b"], "path": "", "siginfo": "z"},
    ]})
    got = {tid: (cls, others) for tid, _, cls, others in r.misses(index)}
    assert got == {
        "c:do_populate_sysroot": (report.OTHER_UNIHASH, [H["f"]]),
        "d:do_populate_sysroot": (report.NOT_ON_MIRROR, []),       # a signature alone is no object
        "e:do_populate_sysroot": (report.SERVER_UNREACHABLE, []),
        "f:do_populate_lic": (report.DOWNLOAD_FAILED, []),
    }
    # Without an index the mirror's other unihashes are unknown.
    assert {tid: cls for tid, _, cls, _ in r.misses(None)}["c:do_populate_sysroot"] == report.UNKNOWN


def test_first_check_is_the_summary_rechecks_apart():
    r = record_with_misses()
    r.sstate_checked({"c:do_populate_sysroot": entry("c", "do_populate_sysroot", "mirror", H["a"], H["c"]),
                      "d:do_populate_sysroot": entry("d", "do_populate_sysroot", "missed", H["b"], H["d"])})
    doc = r.document()
    assert {k: doc["setscene"][k] for k in ("wanted", "local", "mirror", "missed", "rechecked", "found_on_recheck")} \
        == {"wanted": 6, "local": 1, "mirror": 2, "missed": 3, "rechecked": 2, "found_on_recheck": 1}
    # The task found on recheck is no miss any more.
    assert [t["recipe"] for t in doc["misses"]["tasks"]] == ["d", "e", "f"]


def test_unihash_calls():
    r = report.BuildRecord()
    r.unihash_call(["t1", "t2", "t3"], {"t1": "u1", "t2": "h2", "t3": None}, {"t1": "h1", "t2": "h2", "t3": "h3"}, 0.004)
    r.unihash_call(["t4"], {"t4": "u4"}, {"t4": "h4"}, 0.002)
    hs = r.document()["hashserv"]
    assert (hs["queries"], hs["equivalent"], hs["calls"]) == (4, 2, 2)
    assert hs["latency_ms"] == {"mean": 3.0, "max": 4.0, "total": 6.0}


def test_download_measured_from_start_to_arrival(tmp_path):
    obj = tmp_path / "ab" / "cd" / "sstate:b:x:1:r0:x:12:abcd_populate_sysroot.tar.zst"
    obj.parent.mkdir(parents=True)
    obj.write_bytes(b"x" * 3000)
    (tmp_path / "ab" / "cd" / (obj.name + ".siginfo")).write_bytes(b"y" * 100)
    arrived = os.lstat(obj).st_ctime
    r = report.BuildRecord()
    r.sstate_checked({"b:do_populate_sysroot": entry("b", "do_populate_sysroot", "mirror", H["b"], path=str(obj)),
                      "a:do_populate_sysroot": entry("a", "do_populate_sysroot", "local", H["a"], path=str(obj))})
    r.scene_task_started("b:do_populate_sysroot", when=arrived - 1.5)
    r.scene_task_completed("b:do_populate_sysroot")
    r.scene_task_completed("a:do_populate_sysroot")   # local: not a download
    dl = r.document()["downloads"]
    assert dl["objects"] == 1 and dl["bytes"] == 3100
    assert 1.5 <= dl["seconds"] < 3


def test_document_valid_and_line(schema):
    r = record_with_misses()
    r.task_started(noexec=False)
    r.task_started(noexec=True)
    r.unihash_call(["t"], {"t": "u"}, {"t": "h"}, 0.001)
    doc = r.document(unihashes_by_task({"objects": []}), "http://127.0.0.1:1/index.json", succeeded=True)
    jsonschema.validate(doc, schema)
    jsonschema.validate(report.BuildRecord().document(), schema)
    assert report.summary_line(doc, "tmp/log/equivcache/x.json") == (
        "equivcache: setscene 6 wanted: 1 local, 2 mirror, 3 missed (1 unihash guessed while the hash server was "
        "away, 1 download failed, 2 not on the mirror at all); hash server: 1 queries, 1 equivalent, 1.0 ms per "
        "call, 1 errors (1 unihashes guessed); 1 tasks run; report tmp/log/equivcache/x.json")
    doc["misses"]["tasks"][0]["class"] = "lost"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
