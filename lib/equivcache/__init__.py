# SPDX-License-Identifier: MIT
"""meta-equivcache's Python library.

BBIMPORTS: the modules bitbake imports when the layer is added (addpylib in
conf/layer.conf). What bitbake imports at build time stays at the top of
the package; the tools are subpackages. "pure": no bb import (a unit test
reads every module's imports to keep it so).

Build time (imported by bitbake):
  siggen.py        the EquivCacheHash signature handler (registered in bb.siggen)
  hashclient.py    its hash equivalence clients: bounded in time, failures raised once as "away"
  configcheck.py   equivcache.bbclass's ConfigParsed handler: gather, probe, judge, warn/fix/fail
  buildreport.py   equivcache.bbclass's build-event handler: the build report
  buildpublish.py  equivcache.bbclass's publish at build end (EQUIVCACHE_PUBLISH)
  reportsend.py    a build's report sent to a cache's dashboard (EQUIVCACHE_REPORT_TO; pure)
  sstatecheck.py   the mirror availability check (BB_HASHCHECK_FUNCTION), from sstate indexes
  rules.py         the rule registry: one function per mismatch (pure)
  report.py        the build report's record, miss classes and summary line (pure)
  outage.py        the one outage warning per build (pure)
  mirrors.py       SSTATE_MIRRORS parsing (pure)
  knowncaches.py   public sstate mirrors without a descriptor and their hash servers (pure)
  probe.py         network and directory probes (pure)
  trust.py         a consumer of a signed cache: its keyring and settings; the publish rule's input (pure)

Formats and shared helpers (pure):
  descriptor.py    equivcache.json, a cache's descriptor
  catalog.py       index.json: the cache's catalog, each object and task signature by recipe,
                   task and unihash (schemas/index-v2.json)
  pathkeys.py      sstate-index/: the paths of sstate-cache/'s files as 8-byte keys in an
                   append-only journal, for the availability check
  durations.py     durations.json: the producer's time of each task the cache's objects spare (schemas/durations-v2.json)
  names.py         sstate object and signature data names, and walks over them
  files.py         atomic writes
  signing.py       OpenPGP signatures of sstate objects with the real gpg: keys, gpgv checks, keyrings
  formatting.py    sizes, durations and times for people
  buildlock.py     waiting for a build directory's bitbake server to exit
  cli.py           the scripts' error convention, parser, bitbake finder, progress bar
  schemas/         JSON schemas of the report, the catalog, the durations and the dashboard's API

Tools (scripts/ are thin front ends over these):
  server/          equivcache-server: publish, serve, token, gc, check, status, config
  client/          equivcache-client: configure a build directory from a URL
  doctor/          equivcache-doctor: why the mirror misses, ranked
"""

BBIMPORTS = ["siggen"]
