# SPDX-License-Identifier: MIT
#
# Uploads to a cache that requires signatures (serve --require-signatures):
# an sstate object comes with its producer's detached signature, base64 in
# the header X-Equivcache-Signature (its .sig as OE-core's SSTATE_SIG_KEY
# writes it). The object is received under a temporary name as any upload,
# then verified by gpgv against the key bound to the uploading token (token
# add --gpg-key) and nothing else; only then does it take its name, and its
# .sig is written beside it. An object without a signature, signed by
# another key, or uploaded by a token without a key is refused and nothing
# is written. A .sig is never uploaded alone; an object the cache holds
# without a .sig counts as missing, so that the producer sends it again,
# signed. Pure Python: no bb import.

import base64
import binascii
import threading

from equivcache import signing
from equivcache.server.store.signatures import kind
from equivcache.server.store.storage import Refused
from equivcache.uploadapi import SIGNATURE_HEADER


class SignedUploads:
    """The signature checks of one cache's upload endpoint."""

    def __init__(self, cache, tokens):
        self.cache, self.tokens = cache, tokens
        self._locks = {}
        self._guard = threading.Lock()

    def missing(self, files, missing):
        """missing, and the objects of files whose .sig the cache lacks."""
        objects = [p for p, _ in files if kind(p) == "object" and p not in missing]
        sizes = self.cache.storage.sizes([p + signing.SIG_SUFFIX for p in objects])
        return sorted(set(missing) | {p for p in objects if sizes[p + signing.SIG_SUFFIX] is None})

    def lock(self, path):
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def receive(self, token, path, stream, length, sha256, header, sync=True):
        """Store an upload; Refused (and nothing written) where a signature is wanted and wrong."""
        what = kind(path)
        if what == "sig":
            raise Refused(409, "%s: this cache takes a signature with its object only (header %s)"
                          % (path, SIGNATURE_HEADER))
        if what != "object":
            return self.cache.receive(path, stream, length, sha256, sync=sync)
        signature = self.signature(path, header)
        keyring = self.tokens.keyrings().get(token["name"])
        if keyring is None:
            raise Refused(403, "%s: this cache requires signed objects, and token %r has no signing key bound "
                          "(on the cache's machine: token revoke %s, then token add %s --gpg-key FILE)"
                          % (path, token["name"], token["name"], token["name"]))

        def check(data):
            if signing.verify(signature, data, keyring) != token["key"]["fingerprint"]:
                raise Refused(422, "%s: its signature does not verify against producer %s's key %s: signed by "
                              "another key, or not this object's (SSTATE_SIG_KEY must be that key)"
                              % (path, token["name"], token["key"]["fingerprint"]))
        sig_path = path + signing.SIG_SUFFIX
        with self.lock(path):
            signed = self.cache.storage.sizes([sig_path])[sig_path] is not None
            had = self.cache.receive(path, stream, length, sha256, check=check, replace=not signed, sync=sync)
            if not (had and signed):
                self.cache.storage.put_bytes(sig_path, signature)
        return had and signed

    def signature(self, path, header):
        if not header:
            raise Refused(400, "%s: this cache requires signed objects: send its .sig (header %s; publish does "
                          "where the producer sets SSTATE_SIG_KEY and SSTATE_VERIFY_SIG = \"1\")"
                          % (path, SIGNATURE_HEADER))
        try:
            signature = base64.b64decode(header, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "%s: header %s is not base64" % (path, SIGNATURE_HEADER))
        if not signature or len(signature) > signing.MAX_SIGNATURE:
            raise Refused(400, "%s: a signature of %d bytes (at most %d)" % (path, len(signature),
                                                                           signing.MAX_SIGNATURE))
        return signature
