# SPDX-License-Identifier: MIT
#
# oe-selftest cases for the layer as a whole: adding it changes no task
# signature, EquivCacheHash computes OEEquivHash's, and yocto-check-layer
# passes on the whole of OE-core.
#   oe-selftest -r equivcache_layer

import os

from oeqa.core.decorator import OETestTag
from oeqa.selftest.cases.equivcache_base import EquivCacheTestCase
from oeqa.utils.equivcache import LAYERDIR
from oeqa.utils.commands import get_bb_var, get_bb_vars, runCmd


@OETestTag("meta-equivcache")
class EquivCacheLayerTests(EquivCacheTestCase):
    """The layer added to a build, and checked by yocto-check-layer."""

    def test_same_signatures(self):
        """Adding the layer changes no signature, and EquivCacheHash computes OEEquivHash's signatures."""
        runs = {}
        layer_removed = 'BBLAYERS:remove = "%s"\n' % LAYERDIR
        for name, handler, bblayers in (
                ("without-layer", "OEEquivHash", layer_removed),
                ("oeequivhash", "OEEquivHash", ""),
                ("equivcachehash", "EquivCacheHash", "")):
            self.write_bblayers_config(bblayers)
            runs[name], _ = self.signatures_of(self.config_text(handler=handler),
                                               os.path.join(self.workdir, "stamps-" + name))
        self.assertEqual(runs["without-layer"], runs["oeequivhash"], msg="adding meta-equivcache changed signatures")
        self.assertEqual(runs["oeequivhash"], runs["equivcachehash"], msg="EquivCacheHash and OEEquivHash disagree")

    def test_fragment_enables_the_layer(self):
        """wrynose's configuration fragment equivcache/enable selects EquivCacheHash and inherits the class;
        on a release without fragments, OE_FRAGMENTS changes nothing."""
        import bb.parse.ast
        self.config(handler="OEEquivHash", extra='OE_FRAGMENTS += "equivcache/enable"')
        values = get_bb_vars(["BB_SIGNATURE_HANDLER", "INHERIT"])
        if hasattr(bb.parse.ast, "AddFragmentsNode"):
            self.assertEqual(values["BB_SIGNATURE_HANDLER"], "EquivCacheHash", msg=values)
            self.assertIn("equivcache", values["INHERIT"].split(), msg=values)
        else:
            self.assertEqual(values["BB_SIGNATURE_HANDLER"], "OEEquivHash", msg=values)
            self.assertNotIn("equivcache", values["INHERIT"].split(), msg=values)

    def test_yocto_check_layer(self):
        """yocto-check-layer passes, the signature check of a software layer included, on all of OE-core."""
        builddir = os.path.join(self.workdir, "check-build")
        corebase = get_bb_var("COREBASE")
        runCmd("bash -c '. %s/oe-init-build-env %s'" % (corebase, builddir))
        # yocto-check-layer computes every signature with OEBasicHash (from the
        # environment); the same handler in local.conf gives its "bitbake -p"
        # the configuration of those passes, so one of them finds the parse in
        # bitbake's cache instead of parsing OE-core again (about 50 s).
        with open(os.path.join(builddir, "conf", "local.conf"), "a") as f:
            f.write('\nMACHINE = "qemux86-64"\nDISTRO = "nodistro"\nBB_NO_NETWORK = "1"\n'
                    'BB_SIGNATURE_HANDLER = "OEBasicHash"\n'
                    'SSTATE_DIR = "%s/sstate-cache"\n' % self.workdir)
        with open(os.path.join(builddir, "conf", "bblayers.conf"), "w") as f:
            f.write('POKY_BBLAYERS_CONF_VERSION = "2"\nBBPATH = "${TOPDIR}"\nBBFILES ?= ""\n'
                    'BBLAYERS ?= "%s/meta"\n' % corebase)
        result = runCmd("bash -c '. %s/oe-init-build-env %s >/dev/null && yocto-check-layer --no-auto "
                        "--with-software-layer-signature-check %s'" % (corebase, builddir, LAYERDIR),
                        ignore_status=True)
        with open(os.path.join(self.workdir, "yocto-check-layer.log"), "w") as f:
            f.write(result.output)
        self.assertEqual(result.status, 0, msg="yocto-check-layer failed:\n%s" % result.output)
        self.assertNotIn("Not testing for signature changes", result.output, msg=result.output)
        self.assertIn("meta-equivcache", result.output, msg=result.output)
        self.assertIn("PASS", result.output, msg=result.output)
