# SPDX-License-Identifier: MIT
#
# What runs on a producer (a CI agent, a developer's machine), not on the
# cache's machine:
#
#   build.py      a build's SSTATE_DIR, DL_DIR, STAMPS_DIR, buildstats and
#                 hash equivalence database as bitbake resolves them, and the
#                 build configuration bitbake printed (the descriptor's producer)
#   publish.py    local publish: into a cache this machine writes
#   upload.py     the upload client: publish --to URL of a cache served elsewhere
#   connection.py one connection of it to the cache's upload endpoint
#
# Imports hashequiv/ and store/.
