# SPDX-License-Identifier: MIT
#
# The configuration checks of equivcache.bbclass, its ConfigParsed handler:
# gather the values, configure a client from EQUIVCACHE_SERVER, run the
# probes and the rules (pure modules), then warn, fix or fail. The changes
# made are saved, so that task workers, which parse the configuration again,
# make exactly the same ones.

import dataclasses
import hashlib
import importlib.util
import json
import os
import time
import urllib.parse

import bb
import bb.siggen
from bb.asyncrpc.client import ADDR_TYPE_UNIX, ADDR_TYPE_WS, parse_address

from equivcache import descriptor as desc
from equivcache.cachedescriptor import answered_by_descriptor, find_descriptor, state_dir
from equivcache import files, knowncaches, probe, rulebase, rules, sstateusers, trust
from equivcache.cli import Failure
from equivcache.autoserver import auto_database, auto_server_started, note_auto_server
from equivcache.capabilities import database_dir_variable, stock_survives_outage, websockets_usable
from equivcache.outage import claim_once


# Seconds given to the user interface to receive the messages before the
# configuration step fails. knotty, when that step fails, prints only the
# events its reader thread has already queued (drain_events_errorhandling
# waits 0 s), so on a busy machine the messages sent just before can be lost
# and the user sees an exit status of 1 and nothing else (seen in CI).
UI_GRACE = 0.5


def fatal(message):
    """bb.fatal(), but the user sees the message: log it, give the UI's reader
    thread time to queue it, then stop as bb.fatal() does."""
    bb.mainlogger.critical(message)
    time.sleep(UI_GRACE)
    raise bb.BBHandledException()

# Variables the class may change; workers get the same changes.
CHANGEABLE = ("SSTATE_MIRRORS", "BB_SIGNATURE_HANDLER", "BB_HASHSERVE", "BB_HASHSERVE_UPSTREAM",
              "SSTATE_MIRROR_ALLOW_NETWORK", "PREMIRRORS", "SSTATE_VERIFY_SIG", "GPG_PATH", "SSTATE_SIG_KEY",
              "SSTATE_VALID_SIGS")
INPUTS = CHANGEABLE + ("EQUIVCACHE_MODE", "EQUIVCACHE_IGNORE", "EQUIVCACHE_SERVER", "BB_NO_NETWORK",
                       "EQUIVCACHE_KNOWN_CACHES")

# Fetch schemes sent to the downloads mirror of EQUIVCACHE_SERVER, as
# OE-core's own-mirrors.bbclass sends them to SOURCE_MIRROR_URL, with the
# bitbake fetcher module that serves each: wrynose's bitbake has no cvs, bzr
# or osc fetcher, and its sanity check warns about a mirror entry for them.
DOWNLOAD_SCHEMES = (("cvs", "cvs"), ("svn", "svn"), ("git", "git"), ("gitsm", "gitsm"), ("hg", "hg"),
                    ("bzr", "bzr"), ("p4", "perforce"), ("osc", "osc"), ("https?", "wget"), ("ftp", "wget"),
                    ("npm", "npm"), ("crate", "crate"))


def download_schemes():
    """The schemes of DOWNLOAD_SCHEMES that this bitbake has a fetcher for."""
    return [scheme for scheme, module in DOWNLOAD_SCHEMES
            if importlib.util.find_spec("bb.fetch2.%s" % module) is not None]


def parse_server(address):
    """A hash equivalence server address as probe.server() takes it, parsed by bitbake."""
    typ, args = parse_address(address)
    if typ == ADDR_TYPE_UNIX:
        return ("unix", args[0])
    if typ == ADDR_TYPE_WS:
        url = urllib.parse.urlsplit(args[0])
        return ("ws", url.hostname, url.port or (443 if url.scheme == "wss" else 80), url.scheme == "wss")
    return ("tcp", args[0], args[1])


def handler_info(name):
    """(exists, uses a hash equivalence server) for a BB_SIGNATURE_HANDLER name, by class."""
    for obj in list(vars(bb.siggen).values()):
        if isinstance(obj, type) and issubclass(obj, bb.siggen.SignatureGenerator) and obj.name == name:
            return True, issubclass(obj, bb.siggen.SignatureGeneratorUniHashMixIn)
    return False, False


def gather(d):
    handler = d.getVar("BB_SIGNATURE_HANDLER") or "noop"
    exists, uses_server = handler_info(handler)
    settings = rulebase.Settings(
        sstate_mirrors=d.getVar("SSTATE_MIRRORS") or "",
        hashserve=d.getVar("BB_HASHSERVE") or "",
        upstream=d.getVar("BB_HASHSERVE_UPSTREAM") or "",
        handler=handler,
        handler_exists=exists,
        handler_uses_server=uses_server,
        no_network=bb.utils.to_boolean(d.getVar("BB_NO_NETWORK")),
        mirror_allow_network=bb.utils.to_boolean(d.getVar("SSTATE_MIRROR_ALLOW_NETWORK")),
        nativelsbstring=d.getVar("NATIVELSBSTRING") or "",
        uninative="uninative" in (d.getVar("INHERIT") or "").split(),
        websockets=websockets_usable(),
        stock_survives_outage=stock_survives_outage(),
        known_caches=d.getVar("EQUIVCACHE_KNOWN_CACHES") or "",
        topdir=d.getVar("TOPDIR") or "",
        sstate_dir=d.getVar("SSTATE_DIR") or "",
        database=auto_database(d),
        database_dir_variable=database_dir_variable(),
        stock_warns_shared_sstate=handler == "OEEquivHash"
        and "BB_HASHSERVE_DB_DIR" in (d.getVar("check_sanity_everybuild", False) or ""),
        auto_server=auto_server_started(d),
        sig_key=d.getVar("SSTATE_SIG_KEY") or "",
        verify_sig=bb.utils.to_boolean(d.getVar("SSTATE_VERIFY_SIG")),
    )
    if sstate_outside(settings):   # the evidence of sharing the rule reads; nothing to read otherwise
        settings.sstate_sharers = sstateusers.others(settings.sstate_dir, settings.topdir, settings.database)
        settings.sstate_filesystem = sstateusers.network_filesystem(settings.sstate_dir)
    return settings


def sstate_outside(settings):
    """An auto server's database and an SSTATE_DIR outside the build directory."""
    return bool(settings.sstate_dir and settings.topdir and settings.database
                and not rules.inside(settings.sstate_dir, settings.topdir))


def note_sstate_user(settings):
    """Record this build in its SSTATE_DIR, if that is outside the build directory."""
    if sstate_outside(settings):
        sstateusers.note(settings.sstate_dir, settings.topdir, settings.database)


def forget_stale_unihashes(d, stale):
    """bitbake caches each task's unihash in ${PERSISTENT_DIR}/bb_unihashes.dat
    and trusts it while the task hash is the same: what a stale auto server
    answered would outlive it. Under a stale server, note it; in the next
    bitbake server, which starts its auto server afresh, drop that cache
    before bitbake loads it (it does so after ConfigParsed)."""
    marker = os.path.join(state_dir(d), "stale-unihashes")
    if stale:
        bb.utils.mkdirhier(os.path.dirname(marker))
        files.write_atomic(marker, str(os.getpid()))
        return
    try:
        with open(marker) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid != os.getpid():
        cache = os.path.join(d.getVar("PERSISTENT_DIR") or d.getVar("CACHE"), "bb_unihashes.dat")
        bb.utils.remove(cache)
        bb.utils.remove(marker)
        bb.note("equivcache: removed %s, the unihashes a stale hash equivalence server gave" % cache)


def fingerprint(d):
    values = {v: d.getVar(v) or "" for v in INPUTS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def configure_client(d, server, doc):
    """The changes that make this build a client of EQUIVCACHE_SERVER."""
    changes = {}
    settings = gather(d)
    if not settings.sstate_mirrors:
        changes["SSTATE_MIRRORS"] = "file://.* %s/PATH;downloadfilename=PATH" % desc.resolve(server, doc["sstate"])
    # OEEquivHash (wrynose's default) computes the same signatures: switching
    # it keeps every sstate object and gives the build report. Any other
    # handler that uses a server is the user's own choice, and kept.
    if not settings.handler_uses_server or settings.handler == "OEEquivHash":
        changes["BB_SIGNATURE_HANDLER"] = "EquivCacheHash"
    if not settings.hashserve:
        changes["BB_HASHSERVE"] = "auto"
    if changes.get("BB_HASHSERVE", settings.hashserve) == "auto" and not settings.upstream:
        changes["BB_HASHSERVE_UPSTREAM"] = doc["hashserv"][0]
    if settings.no_network and not settings.mirror_allow_network:
        changes["SSTATE_MIRROR_ALLOW_NETWORK"] = "1"
    try:
        changes.update(trust.client_changes(d.getVar, server, doc, lambda url: probe.fetch(url, 10)))
    except Failure as e:
        fatal("equivcache: EQUIVCACHE_SERVER = \"%s\" requires signed sstate objects, and its keys cannot be "
              "trusted: %s." % (server, e))
    downloads = desc.resolve(server, doc.get("downloads", ""))
    if downloads and downloads not in (d.getVar("PREMIRRORS") or ""):
        entries = " ".join("%s://.*/.* %s/" % (scheme, downloads) for scheme in download_schemes())
        changes["PREMIRRORS"] = (entries + " " + (d.getVar("PREMIRRORS") or "")).strip()
    return changes


def apply(d, changes):
    for variable, value in changes.items():
        d.setVar(variable, value)


def applied_path(d):
    return os.path.join(state_dir(d), "applied.json")


def load_applied(d):
    try:
        with open(applied_path(d)) as f:
            saved = json.load(f)
        return saved if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        return {}


def save(d, key, changes, keep=16):
    """Record the changes made for the configuration with this fingerprint
    (one entry per configuration: multiconfigs each have their own)."""
    saved = load_applied(d)
    saved.pop(key, None)
    saved[key] = changes
    saved = dict(list(saved.items())[-keep:])
    path = applied_path(d)
    bb.utils.mkdirhier(os.path.dirname(path))
    files.write_atomic(path, json.dumps(saved))


def apply_saved(d):
    """In a task worker: make the changes the cooker made for this configuration."""
    changes = load_applied(d).get(fingerprint(d))
    if isinstance(changes, dict):
        apply(d, changes)




def first_report(d, report):
    """True unless this cooker process already printed this very report.

    bitbake parses the configuration more than once for some commands
    (bitbake -e three times), and drops the modules imported since it
    started each time, so the memory lives in a small marker file, keyed by
    the cooker's pid. forget_reports() clears it when a build completes,
    so a memory-resident server reports again for the next build.
    """
    token = "%d %s" % (os.getpid(), hashlib.sha256(repr(report).encode()).hexdigest())
    try:
        return claim_once(os.path.join(state_dir(d), "reported"), token)
    except OSError:
        return True


def forget_reports(d):
    bb.utils.remove(os.path.join(state_dir(d), "reported"))


def wrap_hashcheck(d):
    """Make equivcache_checkhashes (lib/equivcache/sstatecheck.py) the
    mirror availability check, around the one configured."""
    hashcheck = d.getVar("BB_HASHCHECK_FUNCTION")
    if not hashcheck or hashcheck == "equivcache_checkhashes":
        return
    if bb.utils.to_boolean(d.getVar("EQUIVCACHE_MIRROR_INDEX"), True):
        d.setVar("EQUIVCACHE_HASHCHECK_PREVIOUS", hashcheck)
        d.setVar("BB_HASHCHECK_FUNCTION", "equivcache_checkhashes")


def probe_all(needed, timeout):
    """probe.run() of needed, but for what the descriptor this parse fetched answered already."""
    answered = answered_by_descriptor(needed)
    probed = probe.run([p for p in needed if p not in answered], timeout, parse_server)
    probed.update(answered)
    return probed


def on_config_parsed(d):
    """The ConfigParsed handler of equivcache.bbclass."""
    if bb.event.worker_fire is not None:
        apply_saved(d)
        return

    wrap_hashcheck(d)
    mode = d.getVar("EQUIVCACHE_MODE") or "warn"
    if mode not in rulebase.MODES:
        fatal("equivcache: EQUIVCACHE_MODE = \"%s\" is not one of %s." % (mode, ", ".join(rulebase.MODES)))
    ignore = (d.getVar("EQUIVCACHE_IGNORE") or "").split()
    unknown = ["EQUIVCACHE_IGNORE names no rule \"%s\"; the rules are: %s." % (name, " ".join(rules.RULE_NAMES))
               for name in rules.unknown_rules(ignore)]
    unknown += ["EQUIVCACHE_KNOWN_CACHES: %s; it is ignored." % problem
                for problem in knowncaches.parse_extra(d.getVar("EQUIVCACHE_KNOWN_CACHES"))[1]]
    try:
        timeout = float(d.getVar("EQUIVCACHE_PROBE_TIMEOUT") or 2)
        if not 0 < timeout <= 60:
            raise ValueError
    except ValueError:
        fatal("equivcache: EQUIVCACHE_PROBE_TIMEOUT = \"%s\" must be a number of seconds above 0 and at most 60."
                 % d.getVar("EQUIVCACHE_PROBE_TIMEOUT"))

    key = fingerprint(d)
    before = {v: d.getVar(v) for v in CHANGEABLE}
    server = d.getVar("EQUIVCACHE_SERVER") or ""
    if server and urllib.parse.urlsplit(server).scheme not in ("http", "https", "file"):
        fatal("equivcache: EQUIVCACHE_SERVER = \"%s\" must be the http(s):// URL of a cache server "
                 "(for example \"http://cache.example.com:8080\")." % server)
    for name in ("EQUIVCACHE_PUBLISH", "EQUIVCACHE_REPORT_TO"):
        url = (d.getVar(name) or "").strip()
        if url and (urllib.parse.urlsplit(url).scheme not in ("http", "https") or not urllib.parse.urlsplit(url).netloc):
            fatal("equivcache: %s = \"%s\" must be the http(s):// URL of a cache server "
                  "(for example \"http://cache.example.com:8080\")." % (name, url))
    doc, _, error = find_descriptor(d, server, timeout)
    changes = {}
    notes = []
    if server and doc:
        changes.update(configure_client(d, server, doc))
        apply(d, changes)
        notes += [("EQUIVCACHE_SERVER = \"%s\"" % server, v) for v in changes]

    settings = gather(d)
    settings.publish_keyids = trust.publish_keyids(trust.publish_descriptor(
        d.getVar("EQUIVCACHE_PUBLISH"), server, doc, lambda url: probe.fetch(url, timeout)),
        d.getVar("EQUIVCACHE_PUBLISH_TOKEN_FILE") or "")
    needed = rules.probes_needed(settings) + [("server", a) for a in (doc or {}).get("hashserv", [])]
    findings = rules.select(rules.evaluate(settings, probe_all(needed, timeout), doc, error), ignore)

    if mode == "fix":
        fixed = {}
        for finding in findings:
            fixed.update(finding.fixes)
        apply(d, fixed)
        changes.update(fixed)
        notes += [("EQUIVCACHE_MODE = \"fix\"", v) for v in fixed]
        findings = [f for f in findings if not f.fixes]
        if fixed:   # the values the fixes set are the ones the auto server gets
            settings = dataclasses.replace(settings, upstream=d.getVar("BB_HASHSERVE_UPSTREAM") or "",
                                           database=auto_database(d))
    # The last rule, judged on those values; its cache is dropped even where it is ignored.
    stale = rules.evaluate_rule("stale-hash-server", settings)
    findings = [f for f in findings if f.rule != "stale-hash-server"] + rules.select(stale, ignore)
    note_auto_server(d, settings)
    note_sstate_user(settings)
    forget_stale_unihashes(d, bool(stale))
    save(d, key, changes)

    if mode != "fatal" and not first_report(d, (key, notes, unknown, [str(f) for f in findings])):
        return
    for message in unknown:
        bb.warn("equivcache: %s" % message)
    for why, variable in notes:
        bb.note("equivcache: %s: set %s = \"%s\" (was \"%s\")" % (why, variable, changes[variable], before.get(variable) or ""))
    if findings and mode == "fatal":
        fatal("equivcache: %d problem%s with the sstate cache and hash equivalence configuration "
                 "(EQUIVCACHE_MODE = \"fatal\"):\n%s" % (len(findings), "s" if len(findings) > 1 else "",
                                                         "\n".join("  %s" % f for f in findings)))
    for finding in findings:
        bb.warn("equivcache: %s" % finding)
