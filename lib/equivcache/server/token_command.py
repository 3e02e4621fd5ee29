# SPDX-License-Identifier: MIT
#
# equivcache-server token add|list|revoke: the producer tokens of a cache
# (server/tokens.py), with their users in the cache's hash equivalence
# database, made through bitbake-hashserv's own user model as the cache's
# admin user (the running server's write socket, or a private endpoint).

import sys

from equivcache.server import tokens
from equivcache.server.endpoints import import_hashserv, write_endpoint
from equivcache.server.layout import admin_credentials, server_config


def _endpoint(cache, bitbake, database, db_password):
    layout = cache.layout
    config = server_config(layout, database)
    hashserv = import_hashserv(bitbake, layout.private)
    admin = admin_credentials(layout)
    return hashserv, admin, write_endpoint(layout, bitbake, hashserv, config["database"], db_password, admin=admin)


def add(cache, bitbake, name, role, database=None, db_password=None, out=sys.stdout, err=sys.stderr):
    store = tokens.TokenStore(cache.layout.private)
    hashserv, admin, endpoint = _endpoint(cache, bitbake, database, db_password)
    with endpoint as address:
        line = tokens.add(store, hashserv, address, admin, name, role)
    out.write(line + "\n")
    err.write("token %s (%s) added to %s; the line above is its token file, shown this once (keep it mode 0600): "
              "publish --to URL --token-file FILE\n" % (name, role, cache.root))
    return 0


def revoke(cache, bitbake, name, database=None, db_password=None, out=sys.stdout):
    store = tokens.TokenStore(cache.layout.private)
    tokens.check_name(name)
    hashserv, admin, endpoint = _endpoint(cache, bitbake, database, db_password)
    with endpoint as address:
        was_active = tokens.revoke(store, hashserv, address, admin, name)
    out.write("token %s %s: it can no longer upload, and its hash server user is deleted\n"
              % (name, "revoked" if was_active else "was already revoked"))
    return 0


def list_tokens(layout, out=sys.stdout):
    store = tokens.TokenStore(layout.private)
    found = store.tokens()
    if not found:
        out.write("no tokens in %s: the upload endpoint is off (token add NAME %s)\n" % (layout.root, layout.root))
        return 0
    width = max(len(t["name"]) for t in found)
    for token in found:
        out.write("%-*s  %-8s  created %s  %s\n" % (width, token["name"], token["role"], token["created"],
                                                   "revoked " + token["revoked"] if token.get("revoked")
                                                   else "active"))
    return 0
