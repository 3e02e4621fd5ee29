# SPDX-License-Identifier: MIT
#
# EQUIVCACHE_PUBLISH: at the end of a successful build, publish what it
# produced to a remote cache (equivcache-server publish --to), without ever
# failing or holding the build. One quick authenticated request first (a
# refused token, a cache without uploads or an unreachable server is one
# warning, and nothing more); then the publish runs on in the background,
# detached from bitbake, its output in ${LOG_DIR}/equivcache/publish.log.
# The build's own paths are handed to it: no second configuration parse.

import json
import os
import sys
import urllib.error
import urllib.request

import bb

from equivcache.cli import layer_dir, spawn_detached
from equivcache.autoserver import auto_database_path
from equivcache.probe import describe_error
from equivcache.uploadapi import PREFIX, TokenFileError, basic_auth, read_token_file

LOG = "publish.log"


def _precheck(url, token_file, timeout):
    """None if the cache takes this token's uploads, else why not (one line)."""
    try:
        name, secret = read_token_file(token_file)
    except TokenFileError as e:
        return "EQUIVCACHE_PUBLISH_TOKEN_FILE %s" % e
    request = urllib.request.Request(url.rstrip("/") + PREFIX + "missing", data=json.dumps({"files": []}).encode(),
                                     method="POST", headers={
                                         "Content-Type": "application/json",
                                         "Authorization": basic_auth(name, secret)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
        return None
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return "%s refused token %s (%d): check EQUIVCACHE_PUBLISH_TOKEN_FILE, or ask for a new token " \
                   "(equivcache-server token add)" % (url, name, e.code)
        if e.code == 405:
            return "%s takes no uploads (it has no producer token, or is not an equivcache-server)" % url
        return "%s answered %d %s" % (url, e.code, e.reason)
    except (OSError, ValueError) as e:
        return "cannot reach %s: %s" % (url, describe_error(e))


def on_build_completed(e, d):
    url = (d.getVar("EQUIVCACHE_PUBLISH") or "").strip()
    if not url or e._failures:
        return
    token_file = d.getVar("EQUIVCACHE_PUBLISH_TOKEN_FILE") or ""
    try:
        timeout = float(d.getVar("EQUIVCACHE_PROBE_TIMEOUT") or 2)
    except ValueError:
        timeout = 2.0
    why = _precheck(url, token_file, timeout) if token_file else \
        "EQUIVCACHE_PUBLISH is set but EQUIVCACHE_PUBLISH_TOKEN_FILE is not"
    if why:
        bb.warn("equivcache: this build was not published: %s" % why)
        return
    # The auto server's database; a build without one reported its
    # equivalences to a server itself.
    database = auto_database_path(d)
    bitbake = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(bb.__file__))))
    command = [sys.executable, os.path.join(layer_dir(), "scripts", "equivcache-server"), "--bitbake", bitbake,
               "publish", "--from", d.getVar("TOPDIR"), "--to", url, "--token-file", token_file,
               "--sstate-dir", d.getVar("SSTATE_DIR"), "--downloads-dir", d.getVar("DL_DIR"),
               "--stamps-dir", d.getVar("STAMPS_DIR"), "--buildstats-dir",
               d.getVar("BUILDSTATS_BASE") or os.path.join(d.getVar("TMPDIR"), "buildstats")]
    if database and os.path.isfile(database):
        command += ["--hashserv-db", database]
    else:
        command += ["--no-equivalences"]
    logdir = os.path.join(d.getVar("LOG_DIR"), "equivcache")
    bb.utils.mkdirhier(logdir)
    log = os.path.join(logdir, LOG)
    spawn_detached(command, log, "$ %s\n" % " ".join(command), cwd=d.getVar("TOPDIR"), fresh=True)
    bb.plain("equivcache: publishing this build to %s in the background (log: %s)" % (url, log))
