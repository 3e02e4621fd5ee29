# SPDX-License-Identifier: MIT
#
# The rules of equivcache.bbclass: every mismatch between sstate mirrors,
# hash equivalence servers, signature handler and network settings, each
# with its message and, where one exists, its fix, registered in the order
# the class reports them (rulebase.py: what they are made of). Pure Python:
# the class gathers the values and the probe results, this module judges them.

import os

from equivcache.rulebase import (MIRROR_SYNTAX, RULES, Context, Finding, is_esdk_remap, is_local_server,
                                 needs_websockets, rule)


# The rules, in the order the findings are reported (the registry's).

@rule("unknown-handler", "BB_SIGNATURE_HANDLER names no signature handler")
def check_unknown_handler(c):
    s = c.settings
    if not s.handler_exists:
        yield Finding("unknown-handler",
                      "BB_SIGNATURE_HANDLER = \"%s\" names no signature handler: bitbake reports an error, falls back "
                      "to \"noop\", which computes no task hashes, so no sstate object is used or written, and "
                      "ends with a failure status. "
                      "Set BB_SIGNATURE_HANDLER = \"EquivCacheHash\" (or OEEquivHash, OEBasicHash), and check "
                      "that the layer providing it is in BBLAYERS." % s.handler,
                      {"BB_SIGNATURE_HANDLER": "EquivCacheHash"})


@rule("handler-without-server", "an equivalence signature handler without BB_HASHSERVE")
def check_handler_without_server(c):
    s = c.settings
    if s.handler_exists and s.handler_uses_server and not s.hashserve:
        yield Finding("handler-without-server",
                      "BB_SIGNATURE_HANDLER = \"%s\" uses a hash equivalence server but BB_HASHSERVE is not set: "
                      "the build stops at its start. Set BB_HASHSERVE = \"auto\"%s."
                      % (s.handler, " and BB_HASHSERVE_UPSTREAM = \"%s\"" % c.published[0] if c.published else ""),
                      {"BB_HASHSERVE": "auto"})


@rule("server-without-handler", "BB_HASHSERVE set under a handler that does not use it")
def check_server_without_handler(c):
    s = c.settings
    if s.handler_exists and not s.handler_uses_server and s.hashserve:
        yield Finding("server-without-handler",
                      "BB_HASHSERVE = \"%s\" is set but BB_SIGNATURE_HANDLER = \"%s\" does not use a hash "
                      "equivalence server: the server is ignored, unihashes are task hashes, and mirror objects "
                      "stored under an equivalent unihash are not found. Set BB_SIGNATURE_HANDLER = "
                      "\"EquivCacheHash\", or remove BB_HASHSERVE." % (s.hashserve, s.handler or "OEBasicHash"),
                      {"BB_SIGNATURE_HANDLER": "EquivCacheHash"})


@rule("mirror-without-equivalence", "a mirror published with hash equivalence, used without it")
def check_mirror_without_equivalence(c):
    s = c.settings
    if c.mirrors and c.published and s.handler_exists and not s.handler_uses_server and not s.hashserve:
        yield Finding("mirror-without-equivalence",
                      "the sstate mirror %s was published with hash equivalence (server %s) but "
                      "BB_SIGNATURE_HANDLER = \"%s\" uses none: objects stored under an equivalent unihash miss "
                      "and those tasks rebuild. Set BB_SIGNATURE_HANDLER = \"EquivCacheHash\", BB_HASHSERVE = "
                      "\"auto\" and BB_HASHSERVE_UPSTREAM = \"%s\"." % (c.mirrors[0].root, c.published[0], s.handler,
                                                                       c.published[0]),
                      {"BB_SIGNATURE_HANDLER": "EquivCacheHash", "BB_HASHSERVE": "auto",
                       "BB_HASHSERVE_UPSTREAM": c.published[0]})


@rule("mirror-without-upstream", "SSTATE_MIRRORS with a local hash equivalence server and no upstream")
def check_mirror_without_upstream(c):
    s = c.settings
    if not (c.mirrors and s.handler_uses_server and s.hashserve and is_local_server(s.hashserve) and not s.upstream):
        return
    published = c.published
    if s.hashserve == "auto":
        fix = "BB_HASHSERVE_UPSTREAM = \"%s\"" % published[0] if published else \
            "BB_HASHSERVE_UPSTREAM to the hash equivalence server published with that mirror"
    else:
        fix = "BB_HASHSERVE = \"auto\" with BB_HASHSERVE_UPSTREAM = \"%s\"" % (
            published[0] if published else "<the mirror's hash equivalence server>")
    yield Finding("mirror-without-upstream",
                  "SSTATE_MIRRORS is set (%s) but BB_HASHSERVE = \"%s\" is a local hash equivalence server "
                  "with no BB_HASHSERVE_UPSTREAM: it does not know the unihashes the mirror's objects are "
                  "stored under, so most of them will miss and those tasks rebuild. Set %s."
                  % (c.mirror_name, s.hashserve, fix),
                  {"BB_HASHSERVE_UPSTREAM": published[0]} if published and s.hashserve == "auto" else {})


@rule("upstream-ignored", "BB_HASHSERVE_UPSTREAM set while BB_HASHSERVE is not \"auto\"")
def check_upstream_ignored(c):
    s = c.settings
    if s.upstream and s.hashserve != "auto":
        yield Finding("upstream-ignored",
                      "BB_HASHSERVE_UPSTREAM = \"%s\" is ignored: bitbake only uses it when BB_HASHSERVE = \"auto\" "
                      "(here \"%s\"). Set BB_HASHSERVE = \"auto\" to use the upstream through a local server, or "
                      "remove BB_HASHSERVE_UPSTREAM." % (s.upstream, s.hashserve or ""),
                      {})


def upstream_probe(c):
    s = c.settings
    return [("server", s.upstream)] if s.upstream and s.hashserve == "auto" else []


@rule("upstream-unreachable", "BB_HASHSERVE_UPSTREAM cannot be reached", probes=upstream_probe)
def check_upstream_unreachable(c):
    s = c.settings
    reason = c.probes.get(("server", s.upstream)) if upstream_probe(c) else None
    if reason:
        alternative = [a for a in c.published if a != s.upstream and not c.probes.get(("server", a))]
        yield Finding("upstream-unreachable",
                      "BB_HASHSERVE_UPSTREAM = \"%s\" cannot be reached (%s): bitbake drops it, and every "
                      "sstate mirror object stored under an equivalent unihash misses. Check the address and "
                      "the network, or start the server." % (s.upstream, reason),
                      {"BB_HASHSERVE_UPSTREAM": alternative[0]}
                      if alternative and ("server", alternative[0]) in c.probes else {})


def remote_server_probe(c):
    s = c.settings
    return [("server", s.hashserve)] if s.hashserve and not is_local_server(s.hashserve) and s.handler_uses_server \
        else []


@rule("server-unreachable", "BB_HASHSERVE is a remote server that cannot be reached", probes=remote_server_probe)
def check_server_unreachable(c):
    s = c.settings
    reason = c.probes.get(("server", s.hashserve)) if remote_server_probe(c) else None
    if not reason:
        return
    if s.handler == "EquivCacheHash":
        cost, fixes = "EquivCacheHash carries on without hash equivalence, so mirror objects stored " \
                      "under an equivalent unihash miss", {}
    elif s.stock_survives_outage:
        cost, fixes = "with %s every task warns, and the unihashes guessed meanwhile are saved, so the mirror " \
                      "keeps missing after the server is back; EquivCacheHash (same signatures) warns once and " \
                      "saves none" % s.handler, \
                      {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}
    else:
        cost, fixes = "with %s the build aborts when it first asks the server; EquivCacheHash (same " \
                      "signatures) would carry on without it" % s.handler, \
                      {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}
    yield Finding("server-unreachable",
                  "BB_HASHSERVE = \"%s\" cannot be reached (%s): %s. Start the server or correct "
                  "BB_HASHSERVE." % (s.hashserve, reason, cost), fixes)


@rule("no-network-mirror", "BB_NO_NETWORK blocks a network sstate mirror")
def check_no_network_mirror(c):
    s = c.settings
    network_mirrors = [m for m in c.mirrors if m.is_network]
    if s.no_network and network_mirrors and not s.mirror_allow_network:
        yield Finding("no-network-mirror",
                      "BB_NO_NETWORK = \"1\" blocks the network sstate mirror %s: the Sstate summary counts its "
                      "objects as found, then every download is refused (\"No sstate archive obtainable\") and "
                      "those tasks rebuild. Set SSTATE_MIRROR_ALLOW_NETWORK = \"1\"."
                      % network_mirrors[0].root, {"SSTATE_MIRROR_ALLOW_NETWORK": "1"})


@rule("mirror-syntax", "malformed SSTATE_MIRRORS")
def check_mirror_syntax(c):
    for kind, detail, mirror in c.parsed.problems:
        if mirror is not None and is_esdk_remap(mirror):
            continue
        yield Finding("mirror-syntax", "SSTATE_MIRRORS is malformed: %s: %s." % (detail, MIRROR_SYNTAX[kind]))


def directory_probes(c):
    return [("dir", m.directory) for m in c.mirrors if m.scheme == "file"]


@rule("mirror-missing-dir", "a file:// sstate mirror directory does not exist", probes=directory_probes)
def check_mirror_missing_dir(c):
    for probe in directory_probes(c):
        reason = c.probes.get(probe)
        if reason:
            yield Finding("mirror-missing-dir",
                          "the SSTATE_MIRRORS directory %s does not exist (%s): no object can come from it. "
                          "Correct the path or mount the share." % (probe[1], reason))


def http_mirrors(c):
    return [m for m in c.mirrors if m.scheme in ("http", "https")]


def http_probes(c):
    return [("http", m.root + "/") for m in http_mirrors(c)]


@rule("mirror-unreachable", "a network sstate mirror does not answer", probes=http_probes)
def check_mirror_unreachable(c):
    for mirror in http_mirrors(c):
        reason = c.probes.get(("http", mirror.root + "/"))
        if reason:
            yield Finding("mirror-unreachable",
                          "the sstate mirror %s does not answer (%s): every object will miss. Check the URL "
                          "and the network, or start the server." % (mirror.root, reason))


@rule("websockets-missing", "a ws:// or wss:// server without the websockets module (10 or newer)")
def check_websockets_missing(c):
    s = c.settings
    if s.websockets:
        return
    for variable, address in (("BB_HASHSERVE", s.hashserve), ("BB_HASHSERVE_UPSTREAM", s.upstream)):
        if needs_websockets(address):
            yield Finding("websockets-missing",
                          "%s = \"%s\" needs the Python websockets module (10 or newer), which bitbake's "
                          "python cannot import: the server cannot be used. Install it (Debian: "
                          "python3-websockets; pip: websockets)." % (variable, address))


@rule("descriptor", "the cache descriptor cannot be read")
def check_descriptor(c):
    if c.descriptor_error:
        yield Finding("descriptor", "the cache descriptor cannot be used (%s): the checks that need it are skipped."
                      % c.descriptor_error)


@rule("descriptor-server-mismatch", "the mirror was published with another hash equivalence server")
def check_descriptor_server_mismatch(c):
    s = c.settings
    if not c.published:
        return
    configured = s.upstream if s.hashserve == "auto" else s.hashserve
    if configured and not is_local_server(configured) and configured not in c.published:
        variable = "BB_HASHSERVE_UPSTREAM" if s.hashserve == "auto" else "BB_HASHSERVE"
        whose = "of %s" % c.known.name if c.known else "published with this sstate mirror"
        yield Finding("descriptor-server-mismatch",
                      "%s = \"%s\" is not the hash equivalence server %s (%s): "
                      "its unihashes do not name the mirror's objects, so they miss. Set %s = \"%s\"."
                      % (variable, configured, whose, c.published[0], variable, c.published[0]),
                      {variable: c.published[0]})


@rule("native-lsb-mismatch", "the mirror has no native sstate for this host distribution")
def check_native_lsb_mismatch(c):
    s = c.settings
    lsbs = (c.descriptor or {}).get("nativelsbstrings") or []
    if s.nativelsbstring and lsbs and s.nativelsbstring not in lsbs and not s.uninative:
        yield Finding("native-lsb-mismatch",
                      "the mirror holds native sstate for %s only, and this host is %s without uninative: no "
                      "native object can match, so every -native recipe rebuilds. Add INHERIT += \"uninative\" "
                      "(with UNINATIVE_URL and checksums) on the producer and here, or build on the same "
                      "distribution." % (", ".join(lsbs), s.nativelsbstring))


def inside(path, directory):
    """Whether `path` is `directory` or below it (by name, as sanity.bbclass compares)."""
    path, directory = os.path.normpath(path), os.path.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@rule("unsigned-publish", "a build publishing to a cache that requires signatures does not sign its objects")
def check_unsigned_publish(c):
    s = c.settings
    keyids = s.publish_keyids
    if keyids is None or (s.sig_key and s.verify_sig and s.sig_key[-16:].upper() in keyids):
        return
    if not keyids:
        yield Finding("unsigned-publish",
                      "EQUIVCACHE_PUBLISH's cache requires signed sstate objects, and binds no key to the token of "
                      "EQUIVCACHE_PUBLISH_TOKEN_FILE: every upload will be refused. Ask its administrator for a token "
                      "with your key (equivcache-server token add NAME --gpg-key FILE), then set SSTATE_SIG_KEY to "
                      "that key and SSTATE_VERIFY_SIG = \"1\".")
        return
    if s.sig_key and s.sig_key[-16:].upper() not in keyids:
        yield Finding("unsigned-publish",
                      "SSTATE_SIG_KEY = \"%s\" is not the key EQUIVCACHE_PUBLISH's cache binds to this build's token "
                      "(%s): it will refuse every object. Set SSTATE_SIG_KEY = \"%s\"."
                      % (s.sig_key, " ".join(keyids), keyids[0]), {"SSTATE_SIG_KEY": keyids[0]})
        return
    fixes = {"SSTATE_VERIFY_SIG": "1"}
    if not s.sig_key:
        fixes["SSTATE_SIG_KEY"] = keyids[0]
    yield Finding("unsigned-publish",
                  "EQUIVCACHE_PUBLISH's cache requires signed sstate objects, and this build does not sign them "
                  "(OE-core signs with SSTATE_SIG_KEY only when SSTATE_VERIFY_SIG = \"1\" too): every upload will "
                  "be refused. Set %s." % " and ".join("%s = \"%s\"" % kv for kv in fixes.items()), fixes)


@rule("shared-sstate-private-database", "SSTATE_DIR shared with other builds (recorded there, or a network file "
      "system), the equivalence database private")
def check_shared_sstate_private_database(c):
    """Only with evidence that SSTATE_DIR is shared: another build recorded
    as using it with another database, or a network file system."""
    s = c.settings
    if not (s.handler_uses_server and s.hashserve == "auto" and s.topdir and s.sstate_dir and s.database):
        return
    if inside(s.sstate_dir, s.topdir) or not inside(s.database, s.topdir) or s.stock_warns_shared_sstate:
        return
    others = [(topdir, database) for topdir, database in s.sstate_sharers if database != s.database]
    if not others and not s.sstate_filesystem:
        return
    if s.database_dir_variable:
        fix = "Set BB_HASHSERVE_DB_DIR = \"%s\" (one database beside the objects) in every build that shares it" \
            % s.sstate_dir
        fixes = {"BB_HASHSERVE_DB_DIR": s.sstate_dir}
    else:
        fix = "Give the builds one database: serve it (equivcache-server, then BB_HASHSERVE_UPSTREAM to it in " \
              "each build), or set one PERSISTENT_DIR outside the build directories for all of them"
        fixes = {}
    if others:
        shown = ["%s (database %s)" % other for other in others[:3]]
        if len(others) > 3:
            shown.append("%d more" % (len(others) - 3))
        evidence = "is shared with the build%s in %s" % ("s" if len(others) > 1 else "", ", ".join(shown))
    else:
        evidence = "is on a network file system (%s), so other machines' builds share it" % s.sstate_filesystem
    yield Finding("shared-sstate-private-database",
                  "SSTATE_DIR = \"%s\" %s, but the hash equivalence database %s is this build's own: an "
                  "equivalence one build learns is unknown to the others, and the objects it stored under an "
                  "equivalent unihash miss there. %s." % (s.sstate_dir, evidence, s.database, fix), fixes)


@rule("stale-hash-server", "a running bitbake server keeps an auto hash equivalence server started with other settings")
def check_stale_hash_server(c):
    s = c.settings
    started = s.auto_server
    if not started or s.hashserve != "auto":
        return
    changed = ["%s \"%s\" (now \"%s\")" % (what, started.get(key, ""), now)
               for what, key, now in (("BB_HASHSERVE_UPSTREAM", "upstream", s.upstream),
                                      ("database", "database", s.database))
               if started.get(key, "") != now]
    if changed:
        yield Finding("stale-hash-server",
                      "this bitbake server started its BB_HASHSERVE = \"auto\" hash equivalence server with %s, "
                      "and keeps it until it stops: the new value is ignored, this build's unihashes come from "
                      "the old one, and bitbake caches them. Run \"bitbake -m\", then build again (the class "
                      "then drops that cache)." % " and ".join(changed))


RULE_NAMES = tuple(r.name for r in RULES)


def probes_needed(settings):
    """What the rules need probed, in rule order: ("server", address), ("http", URL), ("dir", path)."""
    context = Context(settings)
    return list(dict.fromkeys(p for r in RULES for p in r.probes(context)))


def evaluate(settings, probes=None, descriptor=None, descriptor_error=None):
    """Every finding for these settings, rule by rule in registry order.

    probes: {(kind, target): None if it answered, else a one-line reason};
    a probe left out was not run, and its rule stays silent.
    descriptor: the mirror's validated descriptor, if one was found.
    descriptor_error: why the descriptor could not be read, if it could not.
    """
    context = Context(settings, probes, descriptor, descriptor_error)
    return [finding for r in RULES for finding in r.check(context)]


def evaluate_rule(name, settings):
    """The findings of one rule that needs no probe and no descriptor."""
    return [finding for r in RULES if r.name == name for finding in r.check(Context(settings))]


def select(findings, ignore):
    """The findings not silenced by name in EQUIVCACHE_IGNORE."""
    ignored = set(ignore)
    return [f for f in findings if f.rule not in ignored]


def unknown_rules(ignore):
    return [name for name in ignore if name not in RULE_NAMES]
