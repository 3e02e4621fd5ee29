# SPDX-License-Identifier: MIT
#
# Durations (lib/equivcache/durations.py): buildstats task files as
# buildstats.bbclass writes them, matched to the signature data bitbake
# writes as a task ends; the cache's durations.json against its schema;
# and what a build report makes of them (report.py's "saved").

import json

import jsonschema
import pytest

from equivcache import durations, report
from oeqa.utils.equivcache import buildstats_task, sigdata

H = {name: (name * 64)[:64] for name in "abcdef"}


@pytest.fixture
def producer(tmp_path):
    bs, stamps = str(tmp_path / "buildstats"), str(tmp_path / "stamps")
    # Two builds: zlib-native ran in the first, its do_populate_sysroot again in the second.
    buildstats_task(bs, "20261201000000", "zlib-native-1.3.1-r0", "do_compile", 1000.0, 1030.25)
    buildstats_task(bs, "20261201000000", "zlib-native-1.3.1-r0", "do_populate_sysroot", 1031.0, 1033.5)
    buildstats_task(bs, "20261202000000", "zlib-native-1.3.1-r0", "do_populate_sysroot", 5000.0, 5004.0)
    buildstats_task(bs, "20261202000000", "zlib-native-1.3.1-r0", "do_populate_sysroot_setscene", 6000.0, 6001.0)
    # gcc-cross-x86_64 and gcc: the longer PN is not taken for the shorter one's.
    buildstats_task(bs, "20261202000000", "gcc-cross-x86_64-13.2.0-r0", "do_install", 5100.0, 5160.0)
    buildstats_task(bs, "20261202000000", "gcc-13.2.0-r0", "do_install", 5200.0, 5290.0)
    # An epoch (PF has PE_), a failed task, and a run whose sigdata was rewritten later (-S none).
    buildstats_task(bs, "20261202000000", "busybox-1_1.36.1-r0", "do_package", 5300.0, 5312.0)
    buildstats_task(bs, "20261202000000", "busybox-1_1.36.1-r0", "do_deploy", 5400.0, 5401.0, status="FAILED")
    buildstats_task(bs, "20261202000000", "popt-1.19-r0", "do_package", 5500.0, 5502.0)
    sigdata(stamps, "x86_64-linux", "zlib-native", "1.3.1", "do_compile", H["a"], 1030.3)
    sigdata(stamps, "x86_64-linux", "zlib-native", "1.3.1", "do_populate_sysroot", H["b"], 5004.1)
    sigdata(stamps, "x86_64-linux", "gcc-cross-x86_64", "13.2.0", "do_install", H["c"], 5160.2)
    sigdata(stamps, "core2-64-poky-linux", "gcc", "13.2.0", "do_install", H["d"], 5290.1)
    sigdata(stamps, "core2-64-poky-linux", "busybox", "1.36.1", "do_package", H["e"], 5312.0)
    sigdata(stamps, "core2-64-poky-linux", "busybox", "1.36.1", "do_deploy", H["f"], 5401.0)
    sigdata(stamps, "core2-64-poky-linux", "popt", "1.19", "do_package", H["f"], 9000.0)
    return bs, stamps


def test_measure(producer):
    bs, stamps = producer
    assert durations.measure([bs], [stamps]) == {
        ("zlib-native", "do_compile", H["a"]): 30.25,
        ("zlib-native", "do_populate_sysroot", H["b"]): 4.0,    # the run the sigdata's time names
        ("gcc-cross-x86_64", "do_install", H["c"]): 60.0,
        ("gcc", "do_install", H["d"]): 90.0,
        ("busybox", "do_package", H["e"]): 12.0,
    }
    assert durations.measure([bs + "-absent"], [stamps]) == {}


def test_document_schema_and_merge(producer):
    bs, stamps = producer
    with open(durations.SCHEMA) as f:
        schema = json.load(f)
    new = {k: {"seconds": s, "producer": "ci-1", "measured": "2026-12-02T00:00:00Z"}
           for k, s in durations.measure([bs], [stamps]).items()}
    doc = durations.document(new)
    jsonschema.validate(doc, schema)
    assert durations.entries_of(json.loads(json.dumps(doc))) == new
    assert durations.seconds_by_task(doc)[("do_install", H["d"])] == 90.0
    # What the cache no longer holds goes; a second producer's measure of an output it has does not replace it.
    present = {("gcc", "do_install", H["d"]), ("busybox", "do_package", H["e"]), ("x", "do_package", H["a"])}
    later = {("gcc", "do_install", H["d"]): {"seconds": 1.0, "producer": "ci-2", "measured": "x"},
             ("x", "do_package", H["a"]): {"seconds": 2.0, "producer": "ci-2", "measured": "x"}}
    merged = durations.merged(new, later, present)
    assert merged == {("gcc", "do_install", H["d"]): new[("gcc", "do_install", H["d"])],
                      ("busybox", "do_package", H["e"]): new[("busybox", "do_package", H["e"])],
                      ("x", "do_package", H["a"]): later[("x", "do_package", H["a"])]}
    bad = dict(doc, tasks=[dict(doc["tasks"][0], seconds=-1)])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert durations.entries_of({"format": "other"}) == {}


def entry(recipe, task, where, unihash, taskhash=None):
    return {"recipe": recipe, "task": task, "unihash": unihash, "taskhash": taskhash or unihash,
            "where": where, "path": ""}


def test_report_saved_with_unknown():
    """Restored and covered tasks, each credited once with its producer's time; unknown ones counted."""
    r = report.BuildRecord("20261203000000", ["core-image-minimal"], started=100.0)
    r.sstate_checked({
        "gcc:do_install": entry("gcc", "do_install", "mirror", H["d"], taskhash=H["a"]),
        "busybox:do_package": entry("busybox", "do_package", "local", H["e"]),
        "popt:do_package": entry("popt", "do_package", "mirror", H["f"]),
        "zlib:do_package": entry("zlib", "do_package", "missed", H["b"]),
        "bash:do_package": entry("bash", "do_package", "mirror", H["c"]),
    })
    for tid, start, end in (("gcc:do_install", 200.0, 203.0), ("busybox:do_package", 200.0, 200.5),
                            ("popt:do_package", 201.0, 201.25)):
        r.scene_task_started(tid, start)
        r.scene_task_completed(tid, end)
    r.scene_task_started("bash:do_package", 202.0)
    r.scene_task_failed("bash:do_package")
    # Covered: gcc's compile (timed), its install again (restored: counted once), popt's compile (not timed).
    r.task_covered("gcc:do_compile", "gcc", "do_compile", H["c"], H["c"])
    r.task_covered("gcc:do_install", "gcc", "do_install", H["d"], H["a"])
    r.task_covered("popt:do_compile", "popt", "do_compile", H["b"] * 2, H["b"] * 2)
    timed = {("do_install", H["d"]): 90.0, ("do_package", H["e"]): 12.0, ("do_package", H["b"]): 7.0,
             ("do_compile", H["c"]): 600.0}
    doc = r.document(durations=timed, durations_source="http://127.0.0.1:1/durations.json", finished=400.0)
    with open(report.SCHEMA) as f:
        jsonschema.validate(doc, json.load(f))
    saved = doc["saved"]
    assert {k: saved[k] for k in ("skipped", "restored", "covered", "timed", "unknown", "producer_seconds",
                                  "setscene_seconds", "net_seconds", "wall_seconds", "ratio")} == {
        "skipped": 5, "restored": 3, "covered": 2, "timed": 3, "unknown": 2, "producer_seconds": 702.0,
        "setscene_seconds": 3.5, "net_seconds": 698.5, "wall_seconds": 300.0, "ratio": 2.3283}
    assert doc["build"]["wall_seconds"] == 300.0
    tasks = {(t["recipe"], t["task"]): t for t in saved["tasks"]}
    assert len(tasks) == len(saved["tasks"]) == 5
    gcc = tasks[("gcc", "do_install")]
    assert gcc["equivalent"] and gcc["how"] == "restored" and gcc["from"] == "mirror" and gcc["setscene_seconds"] == 3.0
    assert tasks[("gcc", "do_compile")] == {"recipe": "gcc", "task": "do_compile", "unihash": H["c"], "how": "covered",
                                            "from": None, "equivalent": False, "producer_seconds": 600.0,
                                            "setscene_seconds": 0.0}
    assert tasks[("popt", "do_package")]["producer_seconds"] is None and not tasks[("busybox", "do_package")]["equivalent"]
    assert "; the cache saved 12 min of build time (2.3x this build's 5 min 00 s): 5 tasks skipped (3 restored, " \
        "2 covered); their producers took 12 min, restoring took 3.5 s here; 2 of unknown duration; hash " \
        "server: " in report.summary_line(doc)
    # The setscene time of this build's own buildstats, where it has them, rather than its events'.
    timed_here = r.document(durations=timed, finished=400.0, setscene={("gcc", "do_install"): 1.5})["saved"]
    assert (timed_here["setscene_seconds"], timed_here["net_seconds"]) == (2.0, 700.0)
    # No durations at all: counted, never guessed.
    none = r.document(finished=400.0)["saved"]
    assert (none["timed"], none["unknown"], none["net_seconds"]) == (0, 5, 0.0)
    assert report.saved_text(none) == "5 tasks skipped (3 restored, 2 covered), time saved unknown (the cache has " \
        "no durations)"


def test_durations_kept_for_what_the_cache_restores():
    """The cache keeps the durations of its objects' tasks, and of the other tasks of their recipes, the
    newest PER_TASK of each recipe and task; none of a recipe it holds no object of."""
    present = {("gcc", "do_populate_sysroot", H["a"])}
    old = {("gcc", "do_compile", "%064d" % i): {"seconds": float(i), "producer": "ci-1", "measured": "2026-12-%02dT00:00:00Z" % i}
           for i in range(1, 11)}
    new = {("gcc", "do_populate_sysroot", H["a"]): {"seconds": 1.0, "producer": "ci-1", "measured": "2026-12-20T00:00:00Z"},
           ("zlib", "do_compile", H["b"]): {"seconds": 5.0, "producer": "ci-1", "measured": "2026-12-20T00:00:00Z"}}
    kept = durations.merged(old, new, present)
    assert set(kept) == {("gcc", "do_populate_sysroot", H["a"])} | {("gcc", "do_compile", "%064d" % i)
                                                                     for i in range(3, 11)}
    assert durations.PER_TASK == 8
    assert durations.merged(kept, {}, set()) == {}
    v1 = {"format": "equivcache-durations", "version": 1, "tasks": [dict(recipe="gcc", task="do_install", unihash=H["d"],
                                                                         seconds=2.0, producer="x", measured="y")]}
    assert durations.seconds_by_task(v1) == {("do_install", H["d"]): 2.0}


def test_duration_words():
    from equivcache.formatting import duration
    assert [duration(s) for s in (4.24, 98.5, 599.4, 2460, 11100)] == [
        "4.2 s", "1 min 39 s", "9 min 59 s", "41 min", "3 h 05 min"]
