# SPDX-License-Identifier: MIT
#
# The cache server (scripts/equivcache-server): one module per subcommand
# and one per shared piece.
#
#   command.py     the command line: arguments, subcommands, exit statuses
#   publish.py     publish: a producer's objects, downloads, signatures and
#                  equivalences into the cache; its index and descriptor
#   serve.py       serve: the http mirror and both hashserv endpoints
#   status.py      status: what is up and how big the cache is
#   layout.py      the cache directory, its private server/ files, the descriptor
#   database.py    the hash equivalence database: naming, usage, merging
#   endpoints.py   bitbake-hashserv as a child process, and socket helpers
#   mirrorhttp.py  the read-only http mirror
#   prodconfig.py  production configurations: an nginx site, systemd units
