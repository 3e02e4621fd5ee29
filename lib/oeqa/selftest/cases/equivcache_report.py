# SPDX-License-Identifier: MIT
#
# oe-selftest cases for the build report and equivcache-doctor, on the shared
# producer published by equivcache-server.
#   oe-selftest -r equivcache_report

import glob
import json
import os
import subprocess
import urllib.request

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import CHAIN, TARGET, ProducerTestCase, fresh_bitbake_server
from oeqa.utils.commands import get_bb_var, runCmd
from oeqa.utils.equivcache import DOCTOR, buildstats_durations, wait_for
from oeqa.utils.equivcache_services import chromium, page_figures
from equivcache.formatting import duration
from equivcache.report import saved_text


@OETestTag("meta-equivcache")
class EquivCacheReportTests(ProducerTestCase):
    """The build report and equivcache-doctor on a published cache."""

    def test_report_seed_scenario(self):
        """The build report in the seed's scenario: mirror without upstream (misses), then with it (100%):
        what the tasks the cache spared (restored, and covered by those) took the producer, each once, and
        the dashboard both builds reported to."""
        cache_dir, server, output = self.publish_and_serve("cache")
        self.assertRegex(output, r"durations: [1-9]\d* tasks timed by the producer's buildstats \([1-9]\d* with an "
                         r"sstate object, [1-9]\d* that restoring their recipe's objects spares\)")
        mirror = "file://.* %s/sstate-cache/PATH;downloadfilename=PATH" % server.url
        base = ('BB_SIGNATURE_HANDLER = "EquivCacheHash"\nBB_HASHSERVE = "auto"\n'
                'SSTATE_MIRRORS = "%s"\nSSTATE_MIRROR_ALLOW_NETWORK = "1"\nEQUIVCACHE_REPORT_TO = "%s"\n'
                'EQUIVCACHE_REPORT_NAME = "selftest"\n' % (mirror, server.url))
        # TMPDIR is tmp + TCLIBCAPPEND
        produced = buildstats_durations(glob.glob(os.path.join(self.producer, "tmp*", "buildstats"))[0])
        reports = []

        partial = os.path.join(self.workdir, "partial")
        self.consumer(base, workdir=partial)
        output = self.build()
        report = self.build_report(partial)
        self.assert_report_matches_bitbake(output, report)
        self.assertGreater(report["setscene"]["missed"], 0, msg=output)
        self.assertGreater(report["setscene"]["mirror"], 0, msg=output)
        # Every miss is on the mirror under the unihash the producer's server knows.
        self.assertEqual(report["misses"]["index"], server.url + "/index.json")
        self.assertEqual({t["class"] for t in report["misses"]["tasks"]}, {"other-unihash"}, msg=report)
        self.assertEqual(report["misses"]["counts"]["other-unihash"], report["setscene"]["missed"])
        self.assertTrue(all(t["mirror_unihashes"] for t in report["misses"]["tasks"]), msg=report)
        self.assertIn("equivcache-a-native:do_populate_sysroot",
                      ["%s:%s" % (t["recipe"], t["task"]) for t in report["misses"]["tasks"]])
        self.assertEqual(report["hashserv"]["equivalent"], 0, msg=report)
        self.assertEqual(report["hashserv"]["errors"], 0, msg=report)
        self.assertGreater(report["downloads"]["objects"], 0, msg=report)
        self.assertGreater(report["downloads"]["bytes"], 0, msg=report)
        self.assert_time_saved(report, produced, server.url, output)
        reports.append(report)

        full = os.path.join(self.workdir, "full")
        self.consumer(base + 'BB_HASHSERVE_UPSTREAM = "%s"\n' % server.hashserv, workdir=full)
        output = self.build()
        report = self.build_report(full)
        self.assert_report_matches_bitbake(output, report)
        self.assertEqual(report["setscene"]["missed"], 0, msg=output)
        self.assertEqual(report["setscene"]["mirror"], report["setscene"]["wanted"], msg=output)
        self.assertEqual(report["tasks"]["run"], 0, msg=output)
        self.assertEqual(report["misses"]["tasks"], [])
        # The equivalent change: the upstream answers A's new task hashes with the old unihashes.
        self.assertGreater(report["hashserv"]["equivalent"], 0, msg=report)
        self.assertGreater(report["hashserv"]["queries"], report["hashserv"]["equivalent"], msg=report)
        self.assertGreater(report["downloads"]["bytes"], 0, msg=report)
        self.assert_time_saved(report, produced, server.url, output, complete=True)
        reports.append(report)
        self.assert_dashboard(server.url, reports)

    def assert_time_saved(self, report, produced, url, output, complete=False):
        """Every task the cache spared, restored or covered, is in the report once, credited with the
        producer's buildstats duration of it; the total is their sum less the setscene time spent. A
        complete consumer (everything from the cache) knows every duration, its compiles' included."""
        saved = report["saved"]
        self.assertEqual(saved["durations"], url + "/durations.json", msg=saved)
        self.assertGreater(saved["restored"], 0, msg=saved)
        self.assertEqual(saved["skipped"], saved["restored"] + saved["covered"], msg=saved)
        self.assertEqual(len({(t["recipe"], t["task"]) for t in saved["tasks"]}), len(saved["tasks"]), msg=saved)
        self.assertEqual(saved["timed"] + saved["unknown"], saved["skipped"], msg=saved)
        expected = spent = 0.0
        for task in saved["tasks"]:
            if task["producer_seconds"] is None:
                continue
            runs = [s for (pf, t), s in produced.items() if t == task["task"] and pf.startswith(task["recipe"] + "-")]
            self.assertEqual(len(runs), 1, msg="%s: %s" % (task, runs))
            self.assertAlmostEqual(task["producer_seconds"], runs[0], places=2, msg=task)
            self.assertGreaterEqual(task["setscene_seconds"], 0.0)
            expected += runs[0]
            spent += task["setscene_seconds"]
        self.assertAlmostEqual(saved["producer_seconds"], expected, places=2)
        self.assertAlmostEqual(saved["net_seconds"], expected - spent, places=2)
        self.assertAlmostEqual(saved["ratio"], saved["net_seconds"] / report["build"]["wall_seconds"], places=3)
        if complete:
            self.assertEqual(saved["restored"], report["setscene"]["completed"], msg=report)
            self.assertEqual(saved["unknown"], 0, msg=saved)
            self.assertGreater(saved["setscene_seconds"], 0.0, msg=saved)
            covered = {"%s:%s" % (t["recipe"], t["task"]) for t in saved["tasks"] if t["how"] == "covered"}
            self.assertLessEqual({"%s:do_compile" % r for r in CHAIN}, covered, msg=saved)
        line = [l for l in output.splitlines() if l.startswith("equivcache: setscene ")]
        self.assertEqual(len(line), 1, msg=output)
        # The line prints the report's figures (equal to the buildstats' sum to the hundredth, above):
        # formatted from the independent sum, 0.849 and 0.85 would print 0.8 s and 0.9 s.
        self.assertIn("%d tasks skipped (%d restored, %d covered)" % (saved["skipped"], saved["restored"],
                                                                       saved["covered"]), line[0])
        self.assertIn("; %s;" % saved_text(saved), line[0])

    def assert_dashboard(self, url, reports):
        """The dashboard got both reports (sent in the background) and shows their numbers in a real browser."""
        def arrived():
            with urllib.request.urlopen(url + "/api/v1/summary", timeout=10) as answer:
                return json.load(answer)["builds"]["reports"] == len(reports)
        wait_for(arrived, 60, "the builds' reports did not reach the dashboard")
        with urllib.request.urlopen(url + "/api/v1/summary", timeout=10) as answer:
            summary = json.load(answer)
        wanted = sum(r["setscene"]["wanted"] for r in reports)
        hits = sum(r["setscene"]["local"] + r["setscene"]["mirror"] for r in reports)
        net = sum(r["saved"]["net_seconds"] for r in reports)
        self.assertEqual((summary["builds"]["wanted"], summary["builds"]["hits"]), (wanted, hits), msg=summary)
        self.assertAlmostEqual(summary["builds"]["net_seconds"], net, places=2)
        self.assertEqual([r["reporter"] for r in summary["recent"]], ["selftest"] * len(reports))
        self.assertEqual({(m["recipe"], m["task"]) for m in summary["misses"]},
                         {(t["recipe"], t["task"]) for r in reports for t in r["misses"]["tasks"]}, msg=summary)
        # Beside oe-selftest.log (oe-selftest removes its build directory): tests/run's output.
        screenshot = os.path.join(os.path.dirname(self.builddir), "dashboard.png")
        figures = page_figures(chromium(url + "/", self.workdir, screenshot))
        self.assertEqual(figures, {
            "builds": str(len(reports)), "hit-rate": "%.1f%%" % (100.0 * hits / wanted), "saved": duration(max(0.0, net)),
            "ratio": "%.1fx" % max(0.0, summary["builds"]["ratio"]),
            "skipped": str(sum(r["saved"]["skipped"] for r in reports)),
            "restored": str(sum(r["saved"]["restored"] for r in reports)),
            "covered": str(sum(r["saved"]["covered"] for r in reports)),
            "unknown": str(sum(r["saved"]["unknown"] for r in reports))}, msg=figures)
        self.assertAlmostEqual(summary["builds"]["ratio"], net / sum(r["build"]["wall_seconds"] for r in reports),
                               places=3)
        self.assertGreater(os.path.getsize(screenshot), 20000)
        self.logger.info("the dashboard, as Chromium shows it: %s" % screenshot)

    def doctor(self, *targets):
        fresh_bitbake_server(self.builddir)
        result = runCmd([DOCTOR, "--json"] + list(targets or [TARGET]), ignore_status=True, stderr=subprocess.PIPE)
        self.assertEqual(result.status, 0, msg="%s\n%s" % (result.output, result.error))
        return json.loads(result.output)

    def chain_signatures(self, config, name):
        """The chain's signatures by bitbake -S none, in a stamps directory of their own."""
        return self.signatures_of(self.consumer_text(config), os.path.join(self.workdir, "stamps-" + name))[0]

    @staticmethod
    def differing_tasks(base, drifted):
        """The chain's "recipe:task"s whose task hash differs between two signature sets."""
        return {k for k in base if base[k][0] != drifted.get(k, (None,))[0]}

    def test_doctor_names_drift(self):
        """One drift in A: the report's misses, and the doctor names the variable, its values and its cost."""
        cache_dir, server, output = self.publish_and_serve("cache")
        self.assertRegex(output, r"signatures: [1-9]\d* files copied")
        base = 'EQUIVCACHE_SERVER = "%s"\n' % server.url
        drift_a = 'EQUIVCACHE_TEST_NEW_OUTPUT = "1"\n'
        drift_c = 'EQUIVCACHE_TEST_C_OUTPUT = "1"\n'
        undrifted = self.chain_signatures(base, "base")
        cost_a = self.differing_tasks(undrifted, self.chain_signatures(base + drift_a, "a"))
        cost_c = self.differing_tasks(undrifted, self.chain_signatures(base + drift_c, "c"))
        self.assertIn("equivcache-a-native:do_compile", cost_a)
        self.assertIn("equivcache-c-native:do_populate_sysroot", cost_c)
        self.assertGreater(len(cost_a), len(cost_c))

        self.consumer(base + drift_a)
        fresh_bitbake_server(self.builddir)
        stamps = get_bb_var("STAMPS_DIR")
        before = sorted(glob.glob(os.path.join(stamps, "**", "*.sigdata.*"), recursive=True))
        diagnosis = self.doctor()
        self.assertEqual(sorted(glob.glob(os.path.join(stamps, "**", "*.sigdata.*"), recursive=True)), before,
                         msg="equivcache-doctor left signature files behind")
        self.assertEqual(diagnosis["index"], server.url + "/index.json")
        self.assertEqual(len(diagnosis["causes"]), 1, msg=diagnosis)
        cause = diagnosis["causes"][0]
        self.assertEqual((cause["kind"], cause["name"], cause["mirror"], cause["local"]),
                         ("variable", "EQUIVCACHE_TEST_NEW_OUTPUT", "0", "1"), msg=cause)
        self.assertEqual(cause["roots"][0], "equivcache-a-native:do_compile", msg=cause)
        self.assertEqual(cause["tasks"], len(cost_a), msg="%s\n%s" % (cause, sorted(cost_a)))
        self.assertIn("Variable EQUIVCACHE_TEST_NEW_OUTPUT value changed from '0' to '1'", cause["bitbake"])
        human = runCmd([DOCTOR, TARGET]).output
        self.assertIn('EQUIVCACHE_TEST_NEW_OUTPUT differs (yours "1", the mirror\'s "0"): %d tasks' % len(cost_a),
                      human)
        self.assertIn("root equivcache-a-native:do_compile", human)

        # The build: the setscene tasks the drift changes miss, on the mirror under another unihash.
        output = self.build()
        report = self.build_report()
        self.assert_report_matches_bitbake(output, report)
        missed = {"%s:%s" % (t["recipe"], t["task"]) for t in report["misses"]["tasks"]}
        self.assertEqual(len(missed), cause["setscene_tasks"], msg="%s\n%s" % (sorted(missed), cause))
        self.assertTrue(missed <= cost_a, msg=sorted(missed))
        self.assertEqual({t["class"] for t in report["misses"]["tasks"]}, {"other-unihash"}, msg=report)

        # Two drifts: ranked by cost, A's first.
        self.consumer(base + drift_a + drift_c)
        causes = self.doctor()["causes"]
        self.assertEqual([(c["name"], c["tasks"]) for c in causes],
                         [("EQUIVCACHE_TEST_NEW_OUTPUT", len(cost_a)), ("EQUIVCACHE_TEST_C_OUTPUT", len(cost_c))],
                         msg=causes)
        self.assertEqual(causes[1]["roots"][0], "equivcache-c-native:do_compile", msg=causes)
