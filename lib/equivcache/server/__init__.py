# SPDX-License-Identifier: MIT
#
# equivcache-server: publish and serve a shared Yocto cache. The packages,
# lowest first; each imports only those above it in this list (and the
# layer's pure modules), never one below (tests/unit/test_layering.py):
#
#   hashequiv/   the real bitbake-hashserv as child processes, the cache's
#                equivalence database (naming, usage, merging, gc's mark and
#                sweep), tokens (roles, expiry, keys) and their hashserv users
#   store/       the cache: one Cache over one storage protocol that a
#                directory and an S3 bucket implement; its private part,
#                gc's groups and ledger, the dashboard's history, the
#                signature check of a local publish to a signed cache
#   http/        the cache server: the http mirror, the upload endpoint
#                (with its signature checks), the dashboard and its plots,
#                serve() itself
#   producer/    what runs on a producer: reading a build's configuration,
#                local publish, the upload client (publish --to)
#   commands/    a module per subcommand: NAME, HELP, setup_parser(), run()
#   options.py   what several subcommands take: types, option groups, the cache named
#   command.py   main(): the command line, built from commands/
