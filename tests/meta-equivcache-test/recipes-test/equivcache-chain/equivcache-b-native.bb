# SPDX-License-Identifier: MIT
SUMMARY = "meta-equivcache test chain, recipe B (depends on A)"
require equivcache-chain.inc

DEPENDS = "equivcache-a-native"

do_compile() {
    cat ${STAGING_DATADIR_NATIVE}/equivcache-chain/equivcache-a-native.txt > ${B}/${PN}.txt
    echo "B output" >> ${B}/${PN}.txt
}
