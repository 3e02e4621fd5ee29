# SPDX-License-Identifier: MIT
#
# meta-equivcache Python library. BBIMPORTS: modules bitbake imports when
# the layer is added (addpylib in conf/layer.conf).

BBIMPORTS = ["siggen"]
