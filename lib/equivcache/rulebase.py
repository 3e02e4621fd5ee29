# SPDX-License-Identifier: MIT
#
# What the rules of equivcache.bbclass (rules.py) are made of: the settings
# the class gathers, a rule's finding, the context a rule reads (settings,
# probes, descriptor, known cache), and the registry each rule enters with
# its name, summary and probes. Pure Python: no bb import.

from dataclasses import dataclass, field
from typing import Callable

from equivcache import knowncaches
from equivcache.mirrors import parse_mirrors

MODES = ("warn", "fix", "fatal")


MIRROR_SYNTAX = {
    "odd-words": "it must be pairs of \"<regex> <URL>\"",
    "bad-regex": "the first word of a pair is a regular expression",
    "no-path": "without PATH in the URL every object maps to the same place; end it with /PATH",
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
    websockets: bool = True           # bitbake's python has websockets >= 10 (what ws:// and wss:// need)
    stock_survives_outage: bool = False  # bitbake's own handlers carry on when the server is away (wrynose)
    known_caches: str = ""            # EQUIVCACHE_KNOWN_CACHES
    topdir: str = ""                  # TOPDIR
    sstate_dir: str = ""              # SSTATE_DIR
    database: str = ""                # the hashserv.db an auto server uses (BB_HASHSERVE_DB_DIR or PERSISTENT_DIR)
    database_dir_variable: bool = False   # bitbake reads BB_HASHSERVE_DB_DIR (wrynose)
    stock_warns_shared_sstate: bool = False  # sanity.bbclass itself warns about a private database here
    sstate_sharers: list = field(default_factory=list)  # other builds recorded in SSTATE_DIR: [(topdir, database)]
    sstate_filesystem: str = ""       # SSTATE_DIR's file system type if a network one (nfs, cifs, ...), else ""
    auto_server: dict = None          # what this bitbake server started its auto server with, if not what is set now
    sig_key: str = ""                 # SSTATE_SIG_KEY
    verify_sig: bool = False          # SSTATE_VERIFY_SIG = "1" (OE-core signs only with it)
    publish_keyids: list = None       # EQUIVCACHE_PUBLISH's cache requires signatures: the key ids it binds to
                                      # this build's token ([] if none); None if it does not, or no publish


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



class Context:
    """What every rule reads: the settings, the probe results, the mirror's
    descriptor, and what is derived from them once."""

    def __init__(self, settings, probes=None, descriptor=None, descriptor_error=None):
        self.settings = settings
        self.probes = probes or {}
        self.descriptor = descriptor
        self.descriptor_error = descriptor_error
        self.parsed = parse_mirrors(settings.sstate_mirrors)
        self.mirrors = real_mirrors(self.parsed)
        # The servers whose unihashes name the mirror's objects: the
        # descriptor's, else those of a known public cache (knowncaches.py).
        self.known = None if descriptor else knowncaches.find(self.mirrors, settings.known_caches)
        if descriptor:
            self.published = list(descriptor["hashserv"])
        elif self.known:
            self.published = [self.known.hashserv] + list(self.known.aliases)
        else:
            self.published = []

    @property
    def mirror_name(self):
        """The first mirror's root, and the known cache it is, if it is one."""
        return "%s, %s" % (self.mirrors[0].root, self.known.name) if self.known else self.mirrors[0].root


@dataclass(frozen=True)
class Rule:
    """One rule: its name (for EQUIVCACHE_IGNORE and the messages), a summary,
    check(context) -> findings, and probes(context) -> the probes it reads."""

    name: str
    summary: str
    check: Callable
    probes: Callable


def no_probes(context):
    return []


# The registry, in the order the findings are reported.
RULES = []


def rule(name, summary, probes=no_probes):
    """Register the decorated check function as rule `name`."""
    def register(check):
        RULES.append(Rule(name, summary, check, probes))
        return check
    return register
