# SPDX-License-Identifier: MIT
#
# A consumer of a signed cache (its descriptor's "signatures"): the keyring
# its build verifies sstate objects with (GPG_PATH, EQUIVCACHE_GPG_PATH by
# default TOPDIR/equivcache-gnupg), holding the public keys of the cache's
# producers, fetched from its mirror and checked against the fingerprints
# the descriptor lists, and a local key that signs the build's own objects
# (OE-core then wants a .sig on every object, local ones included). What
# the keyring holds is remembered in it (equivcache.json), so that a parse
# runs gpg only when the cache's keys change. Pure Python: no bb import.

import json
import os

from equivcache import descriptor as desc, files, signing, uploadapi
from equivcache.cli import Failure, UsageError

STAMP = "equivcache.json"


def _stamp(homedir):
    try:
        with open(os.path.join(homedir, STAMP)) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def prepare(homedir, server, doc, fetch):
    """The keyring for a consumer of the signed cache at server: (its local
    key id, the key ids SSTATE_VALID_SIGS lists). fetch(url) -> bytes.
    Failure if a key cannot be fetched or is not the one the descriptor names."""
    keys = doc["signatures"]["keys"]
    stamp = _stamp(homedir)
    wanted = {k["fingerprint"] for k in keys}
    keyring = signing.Keyring(homedir)
    if not stamp.get("local") or not wanted <= set(stamp.get("keys", [])):
        have = keyring.fingerprints()
        for key in keys:
            if key["fingerprint"] in have:
                continue
            url = desc.resolve(server, key["url"])
            try:
                data = fetch(url)
                found = signing.key_info(data)
            except (OSError, UsageError) as e:
                raise Failure("the key of producer %s (%s) cannot be used: %s" % (key["producer"], url, e))
            if found["fingerprint"] != key["fingerprint"]:
                raise Failure("%s is key %s, not the %s the cache's descriptor names for producer %s"
                              % (url, found["fingerprint"], key["fingerprint"], key["producer"]))
            keyring.add(data)
        stamp = {"keys": sorted(wanted | set(stamp.get("keys", []))), "local": keyring.local_key()}
        files.write_atomic(os.path.join(homedir, STAMP), json.dumps(stamp), 0o600)
    return stamp["local"], desc.valid_sigs(doc) + [stamp["local"]]


def client_changes(getvar, server, doc, fetch):
    """What makes a build verify the signed cache at server (getvar: the
    datastore's): SSTATE_VERIFY_SIG, the keyring (GPG_PATH), the key ids it
    accepts (SSTATE_VALID_SIGS: the cache's producers' and its own) and its
    local key (SSTATE_SIG_KEY). {} for a cache that is not signed, or a build
    with its own keys (GPG_PATH or SSTATE_SIG_KEY set: a producer's)."""
    if not desc.valid_sigs(doc) or getvar("GPG_PATH") or getvar("SSTATE_SIG_KEY"):
        return {}
    homedir = getvar("EQUIVCACHE_GPG_PATH")
    local, valid = prepare(homedir, server, doc, fetch)
    return {"SSTATE_VERIFY_SIG": "1", "GPG_PATH": homedir, "SSTATE_SIG_KEY": local,
            "SSTATE_VALID_SIGS": " ".join(valid)}


def publish_keyids(doc, token_file):
    """For a build that publishes (EQUIVCACHE_PUBLISH) to the cache whose
    descriptor is doc: None if that cache does not require signatures, else
    the key ids it binds to the token's producer ([] if none, or the token
    file cannot be read)."""
    if not doc or not desc.valid_sigs(doc):
        return None
    try:
        name = uploadapi.read_token_file(token_file)[0]
    except uploadapi.TokenFileError:
        return []
    return [k for key in doc["signatures"]["keys"] if key["producer"] == name for k in key["keyids"]]


def publish_descriptor(publish, server, doc, fetch):
    """The descriptor of EQUIVCACHE_PUBLISH's cache: doc if it is EQUIVCACHE_SERVER's, else fetched
    (fetch(url) -> bytes); None if there is none or it cannot be read (the publish says why)."""
    publish = (publish or "").strip().rstrip("/")
    if not publish:
        return None
    if server and publish == server.rstrip("/"):
        return doc
    try:
        return desc.loads(fetch(publish + "/" + desc.NAME).decode("utf-8", "replace"), publish)
    except (OSError, desc.DescriptorError):
        return None
