# SPDX-License-Identifier: MIT
#
# equivcache-server token add|list|revoke: the producer tokens of a cache
# (hashequiv/tokens.py), with their users in the cache's hash equivalence
# database, made through bitbake-hashserv's own user model as the cache's
# admin user (the running server's write socket, or a private endpoint).

import sys

from equivcache.cli import Parser, find_bitbake
from equivcache.server import options
from equivcache.server.hashequiv import tokens
from equivcache.server.store.layout import admin_credentials

NAME = "token"
HELP = "add, list or revoke producer tokens"


def setup_parser(p):
    p.description = (
        "Producer tokens let remote builds publish (publish --to): each names one "
        "producer, whose secret is both its upload credential (HTTP Basic, checked by the upload "
        "endpoint) and the token of a bitbake-hashserv user of the same name with @read @report "
        "(a reader's: @read only, and no upload). The cache keeps only the secret's SHA-256, in "
        "CACHE_DIR/server/tokens.json (mode 0600); `add` prints NAME:SECRET once, on standard "
        "output: keep it in a file only the producer can read. The upload endpoint is on while "
        "a producer token is; revocation counts at once, in a running server too. A cache that "
        "does not exist yet is created: a CI farm's cache may only ever take remote publishes.")
    p.epilog = ("examples:\n  %(p)s token add ci-agent-1 /srv/yocto-cache > ci-agent-1.token\n"
                "  %(p)s token list /srv/yocto-cache\n  %(p)s token revoke ci-agent-1 /srv/yocto-cache"
                % {"p": options.PROG})
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    sub.required = True
    add = sub.add_parser("add", help="add a token and print its token file's line, once",
                         description="Add a token named NAME to the cache (created if absent) and print "
                         "NAME:SECRET, the token file, once on standard output.")
    add.set_defaults(run=run_add)
    add.add_argument("name", metavar="NAME", help="the token's name: 1-64 letters, digits, '.', '_' or '-'")
    options.add_cache(add)
    add.add_argument("--role", choices=("producer", "reader"), default="producer",
                     help="producer: upload and report equivalences; reader: read the hash server only "
                     "(default: %(default)s)")
    options.add_database(add)
    options.add_s3(add)
    lst = sub.add_parser("list", help="list the tokens, with their roles and states",
                         description="List the cache's tokens: name, role, when created, active or revoked.")
    lst.set_defaults(run=run_list)
    options.add_cache(lst)
    options.add_s3(lst)
    revoke = sub.add_parser("revoke", help="revoke a token and delete its hash server user",
                            description="Revoke the token NAME: it can no longer upload, and its hash server "
                            "user is deleted, in a running server at once.")
    revoke.set_defaults(run=run_revoke)
    revoke.add_argument("name", metavar="NAME", help="the token's name")
    options.add_cache(revoke)
    options.add_database(revoke)
    options.add_s3(revoke)


def run(args):
    return args.run(args)


def run_add(args, out=sys.stdout, err=sys.stderr):
    tokens.check_name(args.name)
    cache = options.cache_of(args, create=True)
    store = tokens.TokenStore(cache.layout.private)
    with cache.endpoint(find_bitbake(args.bitbake), args.database, options.db_password(args), admin=True) as (hashserv, address, _):
        line = tokens.add(store, hashserv, address, admin_credentials(cache.layout), args.name, args.role)
    out.write(line + "\n")
    err.write("token %s (%s) added to %s; the line above is its token file, shown this once (keep it mode 0600): "
              "publish --to URL --token-file FILE\n" % (args.name, args.role, cache.root))
    return 0


def run_revoke(args, out=sys.stdout):
    tokens.check_name(args.name)
    cache = options.cache_of(args)
    cache.layout.create()
    store = tokens.TokenStore(cache.layout.private)
    with cache.endpoint(find_bitbake(args.bitbake), args.database, options.db_password(args), admin=True) as (hashserv, address, _):
        was_active = tokens.revoke(store, hashserv, address, admin_credentials(cache.layout), args.name)
    out.write("token %s %s: it can no longer upload, and its hash server user is deleted\n"
              % (args.name, "revoked" if was_active else "was already revoked"))
    return 0


def run_list(args, out=sys.stdout):
    cache = options.cache_of(args)
    found = tokens.TokenStore(cache.layout.private).tokens()
    if not found:
        out.write("no tokens in %s: the upload endpoint is off (token add NAME %s)\n" % (cache.root, cache.root))
        return 0
    width = max(len(t["name"]) for t in found)
    for token in found:
        out.write("%-*s  %-8s  created %s  %s\n" % (width, token["name"], token["role"], token["created"],
                                                   "revoked " + token["revoked"] if token.get("revoked")
                                                   else "active"))
    return 0
