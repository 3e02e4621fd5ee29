# SPDX-License-Identifier: MIT
#
# The cache's hash equivalence side, over the real bitbake-hashserv:
#
#   processes.py  bitbake-hashserv as child processes (the read endpoint on
#                 TCP, the write endpoint on a unix socket, a private one for
#                 publish, gc and tokens), waiting for them quietly; bitbake's
#                 hashserv module imported without changing the process's
#                 directory; socket helpers
#   database.py   the database: naming it without its password, its usage,
#                 a producer's merged into it, gc's mark and sweep
#   tokens.py     producer tokens (tokens.json) and their hashserv users
#
# Imports nothing of server/ (the lowest part).
