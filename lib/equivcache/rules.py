# SPDX-License-Identifier: MIT
#
# The rules of equivcache.bbclass: every mismatch between sstate mirrors,
# hash equivalence servers, signature handler and network settings, each
# with its message and, where one exists, its fix. Pure Python: the class
# gathers the values and the probe results, this module judges them.

from dataclasses import dataclass, field

from equivcache.mirrors import parse_mirrors

MODES = ("warn", "fix", "fatal")


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str


RULES = (
    Rule("mirror-without-upstream", "SSTATE_MIRRORS with a local hash equivalence server and no upstream"),
    Rule("upstream-ignored", "BB_HASHSERVE_UPSTREAM set while BB_HASHSERVE is not \"auto\""),
    Rule("upstream-unreachable", "BB_HASHSERVE_UPSTREAM cannot be reached"),
    Rule("server-unreachable", "BB_HASHSERVE is a remote server that cannot be reached"),
    Rule("handler-without-server", "an equivalence signature handler without BB_HASHSERVE"),
    Rule("server-without-handler", "BB_HASHSERVE set under a handler that does not use it"),
    Rule("mirror-without-equivalence", "a mirror published with hash equivalence, used without it"),
    Rule("unknown-handler", "BB_SIGNATURE_HANDLER names no signature handler"),
    Rule("no-network-mirror", "BB_NO_NETWORK blocks a network sstate mirror"),
    Rule("mirror-syntax", "malformed SSTATE_MIRRORS"),
    Rule("mirror-missing-dir", "a file:// sstate mirror directory does not exist"),
    Rule("mirror-unreachable", "a network sstate mirror does not answer"),
    Rule("websockets-missing", "a ws:// or wss:// server without the websockets module"),
    Rule("descriptor-server-mismatch", "the mirror was published with another hash equivalence server"),
    Rule("native-lsb-mismatch", "the mirror has no native sstate for this host distribution"),
    Rule("descriptor", "the cache descriptor cannot be read"),
)
RULE_NAMES = tuple(r.name for r in RULES)

MIRROR_SYNTAX = {
    "odd-words": "it must be pairs of \"<regex> <URL>\"",
    "bad-regex": "the first word of a pair is a regular expression",
    "no-path": "without PATH in the URL every object maps to the same place; end it with /PATH",
    "no-downloadfilename": "an http(s)/ftp mirror needs \";downloadfilename=PATH\", or the objects "
                           "land where sstate does not look for them",
    "unsupported-scheme": "no bitbake fetcher serves sstate from it (file, http(s), ftp(s), s3, gs, az, sftp do)",
}


@dataclass
class Settings:
    """The configuration values the rules read, gathered from the datastore."""

    sstate_mirrors: str = ""
    hashserve: str = ""               # BB_HASHSERVE as configured ("auto", "unix://...", "host:port", ...)
    upstream: str = ""                # BB_HASHSERVE_UPSTREAM
    handler: str = ""                 # BB_SIGNATURE_HANDLER
    handler_exists: bool = True       # bitbake knows the handler (else it falls back to noop)
    handler_uses_server: bool = False  # the handler is a SignatureGeneratorUniHashMixIn
    no_network: bool = False          # BB_NO_NETWORK = "1"
    mirror_allow_network: bool = False  # SSTATE_MIRROR_ALLOW_NETWORK = "1"
    nativelsbstring: str = ""
    uninative: bool = False           # uninative in INHERIT
    websockets: bool = True           # "import websockets" works for bitbake's python


@dataclass
class Finding:
    rule: str
    message: str
    fixes: dict = field(default_factory=dict)   # variable -> value that corrects it

    def __str__(self):
        return "[%s] %s" % (self.rule, self.message)


def is_local_server(address):
    return address == "auto" or address.startswith("unix://")


def needs_websockets(address):
    return address.startswith(("ws://", "wss://"))


def is_esdk_remap(mirror):
    """The eSDK's internal "file://universal/..." remapping of SSTATE_MIRRORS,
    which fetches from nowhere (stock sanity.bbclass warns about it anyway)."""
    return mirror.pattern.startswith("file://universal") and mirror.url.startswith("file://universal")


def real_mirrors(parsed):
    """The mirrors that fetch from somewhere."""
    return [m for m in parsed.mirrors if not is_esdk_remap(m)]


def probes_needed(settings):
    """What the class must probe: ("server", address), ("http", URL), ("dir", path)."""
    needed = []
    if settings.upstream and settings.hashserve == "auto":
        needed.append(("server", settings.upstream))
    if settings.hashserve and not is_local_server(settings.hashserve) and settings.handler_uses_server:
        needed.append(("server", settings.hashserve))
    for mirror in real_mirrors(parse_mirrors(settings.sstate_mirrors)):
        if mirror.scheme == "file":
            needed.append(("dir", mirror.directory))
        elif mirror.scheme in ("http", "https"):
            needed.append(("http", mirror.root + "/"))
    return needed


def evaluate(settings, probes=None, descriptor=None, descriptor_error=None):
    """Every finding for these settings.

    probes: {(kind, target): None if it answered, else a one-line reason};
    a probe left out was not run, and its rule stays silent.
    descriptor: the mirror's validated descriptor, if one was found.
    descriptor_error: why the descriptor could not be read, if it could not.
    """
    probes = probes or {}
    found = []
    add = found.append
    s = settings
    parsed = parse_mirrors(s.sstate_mirrors)
    mirrors = real_mirrors(parsed)
    published = list(descriptor["hashserv"]) if descriptor else []

    if not s.handler_exists:
        add(Finding("unknown-handler",
                    "BB_SIGNATURE_HANDLER = \"%s\" names no signature handler: bitbake falls back to \"noop\", "
                    "which computes no task hashes, so no sstate object is ever used or written. "
                    "Set BB_SIGNATURE_HANDLER = \"EquivCacheHash\" (or OEEquivHash, OEBasicHash), and check "
                    "that the layer providing it is in BBLAYERS." % s.handler,
                    {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}))

    if s.handler_exists and s.handler_uses_server and not s.hashserve:
        add(Finding("handler-without-server",
                    "BB_SIGNATURE_HANDLER = \"%s\" uses a hash equivalence server but BB_HASHSERVE is not set: "
                    "the build stops at its start. Set BB_HASHSERVE = \"auto\"%s."
                    % (s.handler, " and BB_HASHSERVE_UPSTREAM = \"%s\"" % published[0] if published else ""),
                    {"BB_HASHSERVE": "auto"}))

    if s.handler_exists and not s.handler_uses_server and s.hashserve:
        add(Finding("server-without-handler",
                    "BB_HASHSERVE = \"%s\" is set but BB_SIGNATURE_HANDLER = \"%s\" does not use a hash "
                    "equivalence server: the server is ignored, unihashes are task hashes, and mirror objects "
                    "stored under an equivalent unihash are not found. Set BB_SIGNATURE_HANDLER = "
                    "\"EquivCacheHash\", or remove BB_HASHSERVE." % (s.hashserve, s.handler or "OEBasicHash"),
                    {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}))

    if mirrors and published and s.handler_exists and not s.handler_uses_server and not s.hashserve:
        add(Finding("mirror-without-equivalence",
                    "the sstate mirror %s was published with hash equivalence (server %s) but "
                    "BB_SIGNATURE_HANDLER = \"%s\" uses none: objects stored under an equivalent unihash miss "
                    "and those tasks rebuild. Set BB_SIGNATURE_HANDLER = \"EquivCacheHash\", BB_HASHSERVE = "
                    "\"auto\" and BB_HASHSERVE_UPSTREAM = \"%s\"." % (mirrors[0].root, published[0], s.handler,
                                                                     published[0]),
                    {"BB_SIGNATURE_HANDLER": "EquivCacheHash", "BB_HASHSERVE": "auto",
                     "BB_HASHSERVE_UPSTREAM": published[0]}))

    uses_server = s.handler_uses_server and s.hashserve
    if mirrors and uses_server and is_local_server(s.hashserve) and not s.upstream:
        if s.hashserve == "auto":
            fix = "BB_HASHSERVE_UPSTREAM = \"%s\"" % published[0] if published else \
                "BB_HASHSERVE_UPSTREAM to the hash equivalence server published with that mirror"
        else:
            fix = "BB_HASHSERVE = \"auto\" with BB_HASHSERVE_UPSTREAM = \"%s\"" % (
                published[0] if published else "<the mirror's hash equivalence server>")
        add(Finding("mirror-without-upstream",
                    "SSTATE_MIRRORS is set (%s) but BB_HASHSERVE = \"%s\" is a local hash equivalence server "
                    "with no BB_HASHSERVE_UPSTREAM: it does not know the unihashes the mirror's objects are "
                    "stored under, so most of them will miss and those tasks rebuild. Set %s."
                    % (mirrors[0].root, s.hashserve, fix),
                    {"BB_HASHSERVE_UPSTREAM": published[0]} if published and s.hashserve == "auto" else {}))

    if s.upstream and s.hashserve != "auto":
        add(Finding("upstream-ignored",
                    "BB_HASHSERVE_UPSTREAM = \"%s\" is ignored: bitbake only uses it when BB_HASHSERVE = \"auto\" "
                    "(here \"%s\"). Set BB_HASHSERVE = \"auto\" to use the upstream through a local server, or "
                    "remove BB_HASHSERVE_UPSTREAM." % (s.upstream, s.hashserve or ""),
                    {}))

    if s.upstream and s.hashserve == "auto":
        reason = probes.get(("server", s.upstream))
        if reason:
            alternative = [a for a in published if a != s.upstream and not probes.get(("server", a))]
            add(Finding("upstream-unreachable",
                        "BB_HASHSERVE_UPSTREAM = \"%s\" cannot be reached (%s): bitbake drops it, and every "
                        "sstate mirror object stored under an equivalent unihash misses. Check the address and "
                        "the network, or start the server." % (s.upstream, reason),
                        {"BB_HASHSERVE_UPSTREAM": alternative[0]} if alternative and ("server", alternative[0]) in probes else {}))

    if s.hashserve and not is_local_server(s.hashserve) and s.handler_uses_server:
        reason = probes.get(("server", s.hashserve))
        if reason:
            if s.handler == "EquivCacheHash":
                cost, fixes = "EquivCacheHash carries on without hash equivalence, so mirror objects stored " \
                              "under an equivalent unihash miss", {}
            else:
                cost, fixes = "with %s the build aborts when it first asks the server; EquivCacheHash (same " \
                              "signatures) would carry on without it" % s.handler, \
                              {"BB_SIGNATURE_HANDLER": "EquivCacheHash"}
            add(Finding("server-unreachable",
                        "BB_HASHSERVE = \"%s\" cannot be reached (%s): %s. Start the server or correct "
                        "BB_HASHSERVE." % (s.hashserve, reason, cost), fixes))

    network_mirrors = [m for m in mirrors if m.is_network]
    if s.no_network and network_mirrors and not s.mirror_allow_network:
        add(Finding("no-network-mirror",
                    "BB_NO_NETWORK = \"1\" blocks the network sstate mirror %s: the Sstate summary counts its "
                    "objects as found, then every download is refused (\"No sstate archive obtainable\") and "
                    "those tasks rebuild. Set SSTATE_MIRROR_ALLOW_NETWORK = \"1\"."
                    % network_mirrors[0].root, {"SSTATE_MIRROR_ALLOW_NETWORK": "1"}))

    for kind, detail, mirror in parsed.problems:
        if mirror is not None and is_esdk_remap(mirror):
            continue
        add(Finding("mirror-syntax", "SSTATE_MIRRORS is malformed: %s: %s." % (detail, MIRROR_SYNTAX[kind])))

    for mirror in mirrors:
        if mirror.scheme == "file":
            reason = probes.get(("dir", mirror.directory))
            if reason:
                add(Finding("mirror-missing-dir",
                            "the SSTATE_MIRRORS directory %s does not exist (%s): no object can come from it. "
                            "Correct the path or mount the share." % (mirror.directory, reason)))
        elif mirror.scheme in ("http", "https"):
            reason = probes.get(("http", mirror.root + "/"))
            if reason:
                add(Finding("mirror-unreachable",
                            "the sstate mirror %s does not answer (%s): every object will miss. Check the URL "
                            "and the network, or start the server." % (mirror.root, reason)))

    if not s.websockets:
        for variable, address in (("BB_HASHSERVE", s.hashserve), ("BB_HASHSERVE_UPSTREAM", s.upstream)):
            if needs_websockets(address):
                add(Finding("websockets-missing",
                            "%s = \"%s\" needs the Python websockets module, which bitbake's python cannot "
                            "import: the server cannot be used. Install it (Debian: python3-websockets; "
                            "pip: websockets)." % (variable, address)))

    if descriptor_error:
        add(Finding("descriptor", "the cache descriptor cannot be used (%s): the checks that need it are skipped."
                    % descriptor_error))

    if descriptor:
        configured = s.upstream if s.hashserve == "auto" else s.hashserve
        if configured and not is_local_server(configured) and configured not in published:
            variable = "BB_HASHSERVE_UPSTREAM" if s.hashserve == "auto" else "BB_HASHSERVE"
            add(Finding("descriptor-server-mismatch",
                        "%s = \"%s\" is not the hash equivalence server published with this sstate mirror (%s): "
                        "its unihashes do not name the mirror's objects, so they miss. Set %s = \"%s\"."
                        % (variable, configured, ", ".join(published), variable, published[0]),
                        {variable: published[0]}))
        lsbs = descriptor.get("nativelsbstrings") or []
        if s.nativelsbstring and lsbs and s.nativelsbstring not in lsbs and not s.uninative:
            add(Finding("native-lsb-mismatch",
                        "the mirror holds native sstate for %s only, and this host is %s without uninative: no "
                        "native object can match, so every -native recipe rebuilds. Add INHERIT += \"uninative\" "
                        "(with UNINATIVE_URL and checksums) on the producer and here, or build on the same "
                        "distribution." % (", ".join(lsbs), s.nativelsbstring)))

    return found


def select(findings, ignore):
    """The findings not silenced by name in EQUIVCACHE_IGNORE."""
    ignored = set(ignore)
    return [f for f in findings if f.rule not in ignored]


def unknown_rules(ignore):
    return [name for name in ignore if name not in RULE_NAMES]
