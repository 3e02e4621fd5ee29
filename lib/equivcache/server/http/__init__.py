# SPDX-License-Identifier: MIT
#
# The cache server that equivcache-server serve runs:
#
#   mirror.py     the read-only http mirror: GET and HEAD of the published
#                 names, byte ranges, sendfile, atime as gc's "used"
#   uploads.py    the upload endpoint (/upload/v1/) for producer tokens, and
#                 the dashboard's routes, on the mirror's port
#   handoff.py    the upload worker: a process of its own takes each upload
#                 connection, off the readers' path
#   dashboard.py  the dashboard at / and its JSON API (/api/v1/)
#   plots.py      its plots, drawn by matplotlib as SVG
#   serve.py      serve(): the hashserv endpoints, the http server, the state
#
# Imports hashequiv/ and store/.
