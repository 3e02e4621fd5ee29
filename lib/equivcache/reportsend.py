# SPDX-License-Identifier: MIT
#
# EQUIVCACHE_REPORT_TO: a build's report, sent to a cache server's
# dashboard (POST /api/v1/reports, lib/equivcache/server/http/dashboard.py) by a
# process detached from bitbake, so that a slow or absent server never fails
# or holds the build; its output goes to ${LOG_DIR}/equivcache/report-send.log.
# What is sent: the report without its per-task list of spared tasks (the
# misses stay: the dashboard ranks them), with the unihashes of the objects
# it restored instead (at most RESTORED_LIMIT: the server counts them as
# used, gc's least recently used), and the reporter's name only if
# EQUIVCACHE_REPORT_NAME gives one. Pure Python: no bb import.
#
#   python3 -m equivcache.reportsend URL REPORT.json [NAME [TOKEN_FILE]]
#
# With a token file (EQUIVCACHE_REPORT_TOKEN_FILE: a reporter's or a
# producer's), the report carries it (HTTP Basic), as a cache run with
# serve --reports-need-token wants.

import json
import os
import sys
import urllib.error
import urllib.request

from equivcache import uploadapi
from equivcache.cli import spawn_detached

LOG = "report-send.log"
PATH = "/api/v1/reports"
TIMEOUT = 30
LIMIT = 4 << 20   # the largest report a server takes
RESTORED_LIMIT = 20000   # the restored objects' unihashes a report carries (about 1.4 MB)


def compact(doc, reporter=""):
    """What a server keeps of a build report: no per-task list of spared
    tasks; the unihashes of the objects restored (the first RESTORED_LIMIT)."""
    sent = dict(doc)
    sent["saved"] = {k: v for k, v in doc["saved"].items() if k != "tasks"}
    sent["saved"]["restored_unihashes"] = sorted({t["unihash"] for t in doc["saved"].get("tasks", [])
                                                  if t.get("how", "restored") == "restored"})[:RESTORED_LIMIT]
    sent["reporter"] = reporter
    return sent


def send(url, doc, timeout=TIMEOUT, token=None):
    """POST a compact report to the cache server at url (with token, (name, secret), if given); its id there."""
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = uploadapi.basic_auth(*token)
    request = urllib.request.Request(url.rstrip("/") + PATH, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())["id"]


def send_in_background(url, path, reporter, log, token_file=""):
    """Send the report at path to url from a detached process, its output in log."""
    lib = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spawn_detached([sys.executable, "-m", "equivcache.reportsend", url, path, reporter, token_file], log,
                   env={"PYTHONPATH": lib})


def main(argv):
    if len(argv) not in (2, 3, 4):
        sys.stderr.write("usage: python3 -m equivcache.reportsend URL REPORT.json [NAME [TOKEN_FILE]]\n")
        return 2
    url, path = argv[0], argv[1]
    try:
        token = uploadapi.read_token_file(argv[3]) if len(argv) == 4 and argv[3] else None
        with open(path) as f:
            doc = compact(json.load(f), argv[2] if len(argv) >= 3 else "")
        number = send(url, doc, token=token)
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
