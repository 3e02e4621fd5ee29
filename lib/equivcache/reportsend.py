# SPDX-License-Identifier: MIT
#
# EQUIVCACHE_REPORT_TO: a build's report, sent to a cache server's
# dashboard (POST /api/v1/reports, lib/equivcache/server/http/dashboard.py) by a
# process detached from bitbake, so that a slow or absent server never fails
# or holds the build; its output goes to ${LOG_DIR}/equivcache/report-send.log.
# What is sent: the report without its per-task list of restored tasks (the
# misses stay: the dashboard ranks them), and the reporter's name only if
# EQUIVCACHE_REPORT_NAME gives one. Pure Python: no bb import.
#
#   python3 -m equivcache.reportsend URL REPORT.json [NAME]

import json
import os
import sys
import urllib.error
import urllib.request

from equivcache.cli import spawn_detached

LOG = "report-send.log"
PATH = "/api/v1/reports"
TIMEOUT = 30
LIMIT = 4 << 20   # the largest report a server takes


def compact(doc, reporter=""):
    """What a server keeps of a build report: no per-task list of restored tasks."""
    sent = dict(doc)
    sent["saved"] = {k: v for k, v in doc["saved"].items() if k != "tasks"}
    sent["reporter"] = reporter
    return sent


def send(url, doc, timeout=TIMEOUT):
    """POST a compact report to the cache server at url; its id there."""
    body = json.dumps(doc).encode()
    request = urllib.request.Request(url.rstrip("/") + PATH, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())["id"]


def send_in_background(url, path, reporter, log):
    """Send the report at path to url from a detached process, its output in log."""
    lib = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spawn_detached([sys.executable, "-m", "equivcache.reportsend", url, path, reporter], log,
                   env={"PYTHONPATH": lib})


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: python3 -m equivcache.reportsend URL REPORT.json [NAME]\n")
        return 2
    url, path = argv[0], argv[1]
    try:
        with open(path) as f:
            doc = compact(json.load(f), argv[2] if len(argv) == 3 else "")
        number = send(url, doc)
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", "replace")
        print("equivcache: %s refused the report %s: %d %s %s" % (url, path, e.code, e.reason, detail.strip()))
        return 1
    except (OSError, ValueError, KeyError) as e:
        print("equivcache: the report %s was not sent to %s: %s" % (path, url, e))
        return 1
    print("equivcache: report %s sent to %s (report %s there)" % (path, url, number))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
