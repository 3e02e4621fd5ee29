# SPDX-License-Identifier: MIT
#
# A cache that requires signatures (serve --require-signatures, remembered in
# server.json): which of its files are signed sstate objects, and the check
# a local publish makes (each object's .sig verified by gpgv against the keys
# of the cache's producers, token add --gpg-key). The upload endpoint's own
# check is http/signed.py's. Pure Python: no bb import.

import os

from equivcache import names, signing
from equivcache.server.store.layout import saved_config, token_store


def kind(path):
    """"object", "sig" or "siginfo" for an sstate-cache/ path, else None."""
    if not path.startswith("sstate-cache/"):
        return None
    parsed = names.parse_sstate_name(path)
    return parsed[3] if parsed else None


def required(layout):
    return bool(saved_config(layout).get("require_signatures"))


def verified_objects(layout, source, files):
    """(the files of a producer's SSTATE_DIR to publish, refused objects) for a
    cache that requires signatures: an object whose .sig no producer key of
    the cache verifies is refused, with its .sig and .siginfo."""
    keyrings = token_store(layout).keyrings()
    refused = set()
    present = {rel for rel, _ in files}
    for rel, _ in files:
        if kind("sstate-cache/" + rel) == "object" and (
                rel + signing.SIG_SUFFIX not in present or signing.verify_file(
                    os.path.join(source, rel + signing.SIG_SUFFIX), os.path.join(source, rel), keyrings) is None):
            refused.add(rel)
    kept = [(rel, size) for rel, size in files if object_of(rel) not in refused]
    return kept, sorted(refused)


def object_of(rel):
    """The object an sstate file goes with: itself, or the object of its .sig or .siginfo."""
    for suffix in (signing.SIG_SUFFIX, ".siginfo"):
        if rel.endswith(".tar.zst" + suffix):
            return rel[:-len(suffix)]
    return rel
