# SPDX-License-Identifier: MIT
#
# The cache descriptor: a small versioned JSON document that a cache server
# publishes at the root of its mirror (<mirror root>/equivcache.json), saying
# which hash equivalence server belongs to the cache and what the cache holds.
# Pure Python: no bb import.
#
# Format version 1:
#
#   {
#     "format": "equivcache-descriptor",
#     "version": 1,
#     "generated": "2026-11-21T05:00:00Z",           # UTC, ISO 8601
#     "hashserv": ["cache.example.com:8686"],        # read-only servers of this cache
#     "sstate": "sstate-cache",                      # relative to the mirror root, or a URL
#     "downloads": "downloads",                      # likewise; "" if none
#     "nativelsbstrings": ["debian-12", "universal"],
#     "producer": {
#       "DISTRO": "poky", "MACHINE": "qemux86-64", "TUNE_FEATURES": "m64 core2",
#       "SDKMACHINE": "x86_64",
#       "layers": [{"name": "meta", "revision": "0123abcd..."}]
#     },
#     "signatures": {                                # only for a cache that requires them
#       "required": true,
#       "keys": [{"producer": "ci-1", "fingerprint": "40 HEX", "keyids": ["16 HEX"],
#                 "url": "keys/ci-1.asc"}]           # relative to the mirror root
#     }
#   }

import json
import re
import urllib.parse
from datetime import datetime

NAME = "equivcache.json"
FORMAT = "equivcache-descriptor"
VERSION = 1

PRODUCER_KEYS = ("DISTRO", "MACHINE", "TUNE_FEATURES", "SDKMACHINE")
TOP_KEYS = ("format", "version", "generated", "hashserv", "sstate", "downloads", "nativelsbstrings", "producer",
            "signatures", "sstate_index")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_KEYID = re.compile(r"^[0-9A-F]{16}$")

# A hash equivalence server address as bitbake takes it: host:port,
# [v6]:port, unix://path, ws:// or wss:// URL.
_ADDRESS = re.compile(r"^(unix://.+|wss?://.+|\[[^\]]+\]:\d+|[^:/\s]+:\d+)$")


class DescriptorError(ValueError):
    """A descriptor that cannot be used; .errors lists every problem."""

    def __init__(self, errors, source=None):
        self.errors = list(errors)
        self.source = source
        where = " in %s" % source if source else ""
        super().__init__("invalid cache descriptor%s: %s" % (where, "; ".join(self.errors)))


def _is_text(value):
    return isinstance(value, str)


def _text_list(value):
    return isinstance(value, list) and all(_is_text(v) and v for v in value)


def validate(doc):
    """Return the list of every problem in a parsed descriptor (empty if valid)."""
    if not isinstance(doc, dict):
        return ["the document is %s, not a JSON object" % type(doc).__name__]
    errors = []
    if doc.get("format") != FORMAT:
        errors.append("format: must be %r, not %r" % (FORMAT, doc.get("format")))
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        errors.append("version: must be an integer, not %r" % (version,))
    elif version != VERSION:
        errors.append("version: %d is not supported (this layer reads version %d)" % (version, VERSION))
    generated = doc.get("generated")
    if not _is_text(generated):
        errors.append("generated: must be an ISO 8601 time, not %r" % (generated,))
    else:
        try:
            datetime.fromisoformat(generated.replace("Z", "+00:00"))
        except ValueError:
            errors.append("generated: %r is not an ISO 8601 time" % generated)
    hashserv = doc.get("hashserv")
    if not _text_list(hashserv) or not hashserv:
        errors.append("hashserv: must be a non-empty list of server addresses, not %r" % (hashserv,))
    else:
        for address in hashserv:
            if not _ADDRESS.match(address):
                errors.append("hashserv: %r is not a hash equivalence server address "
                              "(host:port, [v6]:port, unix://path, ws:// or wss:// URL)" % address)
    for key in ("sstate", "downloads"):
        if not _is_text(doc.get(key)):
            errors.append("%s: must be a path or URL string, not %r" % (key, doc.get(key)))
    if doc.get("sstate") == "":
        errors.append("sstate: must not be empty")
    lsb = doc.get("nativelsbstrings")
    if not _text_list(lsb):
        errors.append("nativelsbstrings: must be a list of NATIVELSBSTRING values, not %r" % (lsb,))
    producer = doc.get("producer")
    if not isinstance(producer, dict):
        errors.append("producer: must be an object, not %r" % (producer,))
    else:
        for key in PRODUCER_KEYS:
            if key in producer and not _is_text(producer[key]):
                errors.append("producer.%s: must be a string, not %r" % (key, producer[key]))
        layers = producer.get("layers", [])
        if not isinstance(layers, list):
            errors.append("producer.layers: must be a list, not %r" % (layers,))
        else:
            for i, layer in enumerate(layers):
                if not (isinstance(layer, dict) and _is_text(layer.get("name")) and _is_text(layer.get("revision"))):
                    errors.append("producer.layers[%d]: must be {\"name\": ..., \"revision\": ...}, not %r" % (i, layer))
    if "signatures" in doc:
        errors += _signature_errors(doc["signatures"])
    if "sstate_index" in doc:
        from equivcache import pathkeys
        try:
            pathkeys.check_head(doc["sstate_index"])
        except pathkeys.Unavailable as e:
            errors.append("sstate_index: must be the sstate index's head.json, not %.200r (%s)"
                          % (doc["sstate_index"], e))
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        errors.append("unknown keys: %s" % ", ".join(unknown))
    return errors


def _signature_errors(signatures):
    if not isinstance(signatures, dict) or not isinstance(signatures.get("required"), bool) \
            or not isinstance(signatures.get("keys"), list):
        return ["signatures: must be {\"required\": true or false, \"keys\": [...]}, not %r" % (signatures,)]
    errors = []
    for i, key in enumerate(signatures["keys"]):
        if not (isinstance(key, dict) and _is_text(key.get("producer")) and _is_text(key.get("url"))
                and _FINGERPRINT.match(str(key.get("fingerprint"))) and isinstance(key.get("keyids"), list)
                and key["keyids"] and all(_KEYID.match(str(k)) for k in key["keyids"])):
            errors.append("signatures.keys[%d]: must be {\"producer\", \"fingerprint\" (40 hex), \"keyids\" "
                          "(16 hex each), \"url\"}, not %r" % (i, key))
    return errors


def valid_sigs(doc):
    """The long key ids a consumer of a signed cache accepts (SSTATE_VALID_SIGS), [] if it is not signed."""
    signatures = doc.get("signatures") or {}
    if not signatures.get("required"):
        return []
    return [keyid for key in signatures["keys"] for keyid in key["keyids"]]


def loads(text, source=None):
    """Parse and validate a descriptor; raise DescriptorError listing every problem."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise DescriptorError(["not JSON: %s" % e], source) from e
    errors = validate(doc)
    if errors:
        raise DescriptorError(errors, source)
    return doc


def dumps(doc):
    """Serialise a descriptor (validated first) as stable, readable JSON."""
    errors = validate(doc)
    if errors:
        raise DescriptorError(errors)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def resolve(root, path):
    """The URL of a descriptor path ("sstate-cache" or a URL) against the mirror root URL."""
    if not path:
        return ""
    if urllib.parse.urlsplit(path).scheme:
        return path
    return root.rstrip("/") + "/" + path.strip("/")
