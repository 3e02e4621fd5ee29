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
    add = action(sub, "add", run_add, "add a token and print its token file's line, once",
                 "Add a token named NAME to the cache (created if absent) and print NAME:SECRET, the token file, "
                 "once on standard output.", named=True)
    add.add_argument("--role", choices=("producer", "reader"), default="producer",
                     help="producer: upload and report equivalences; reader: read the hash server only "
                     "(default: %(default)s)")
    action(sub, "list", run_list, "list the tokens, with their roles and states",
           "List the cache's tokens: name, role, when created, active or revoked.")
    action(sub, "revoke", run_revoke, "revoke a token and delete its hash server user",
           "Revoke the token NAME: it can no longer upload, and its hash server user is deleted, in a running "
           "server at once.", named=True)


def action(sub, name, run, help, description, named=False):
    """A token ACTION's parser: [NAME] CACHE_DIR, and the database of those that change its hash server's users."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(run=run)
    if named:
        p.add_argument("name", metavar="NAME", help="the token's name: 1-64 letters, digits, '.', '_' or '-'")
    options.add_cache(p)
    if named:
        options.add_database(p)
    options.add_s3(p)
    return p


def run(args):
    return args.run(args)


def as_admin(args, change, create=False):
    """(cache, change(store, hashserv, address, admin)) on the cache args names, through a write endpoint
    on its equivalences as its admin user."""
    tokens.check_name(args.name)
    cache = options.cache_of(args, create=create)
    cache.layout.create()
    store = tokens.TokenStore(cache.layout.private)
    bitbake, password = find_bitbake(args.bitbake), options.db_password(args)
    with cache.endpoint(bitbake, args.database, password, admin=True) as (hashserv, address, _):
        return cache, change(store, hashserv, address, admin_credentials(cache.layout))


def run_add(args, out=sys.stdout, err=sys.stderr):
    cache, line = as_admin(args, lambda *admin: tokens.add(*admin, args.name, args.role), create=True)
    out.write(line + "\n")
    err.write("token %s (%s) added to %s; the line above is its token file, shown this once (keep it mode 0600): "
              "publish --to URL --token-file FILE\n" % (args.name, args.role, cache.root))
    return 0


def run_revoke(args, out=sys.stdout):
    _, was_active = as_admin(args, lambda *admin: tokens.revoke(*admin, args.name))
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
