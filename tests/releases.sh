# SPDX-License-Identifier: MIT
#
# The releases meta-equivcache is tested on, and where each one's tree
# lives: sourced by tests/setup and tests/run, so that both agree. A release
# is added here, with its tree, once the whole suite runs on it.

SUPPORTED_RELEASES="scarthgap wrynose"

# release_var RELEASE: the environment variable naming the release's tree.
release_var() {
    case "$1" in
        scarthgap) echo POKY_DIR ;;
        wrynose) echo WRYNOSE_DIR ;;
    esac
}

# release_default RELEASE: where tests/setup puts the tree by default.
release_default() {
    case "$1" in
        scarthgap) echo /opt/yocto/poky-yocto-5.0.15 ;;
        wrynose) echo /opt/yocto/wrynose-yocto-6.0.2 ;;
    esac
}

# release_tag RELEASE: the tag the tree is made from.
release_tag() {
    case "$1" in
        scarthgap) echo yocto-5.0.15 ;;
        wrynose) echo yocto-6.0.2 ;;
    esac
}

# release_bitbake RELEASE: the bitbake version series of the release.
release_bitbake() {
    case "$1" in
        scarthgap) echo 2.8 ;;
        wrynose) echo 2.18 ;;
    esac
}

known_release() { [ -n "$(release_var "$1")" ]; }

# release_dir RELEASE: the tree to use ($VARIABLE, else the default).
release_dir() {
    local var
    var=$(release_var "$1")
    echo "${!var:-$(release_default "$1")}"
}

# release_tree_ok RELEASE TREE: TREE holds oe-init-build-env and a bitbake of the release's series.
release_tree_ok() {
    local version
    [ -f "$2/oe-init-build-env" ] || return 1
    version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$2/bitbake/lib/bb/__init__.py" 2>/dev/null)
    case "$version" in
        "$(release_bitbake "$1")".*) return 0 ;;
        *) return 1 ;;
    esac
}

# release_help WIDTH: one line per release for a --help text, names in WIDTH columns.
release_help() {
    local release
    for release in $SUPPORTED_RELEASES; do
        printf "  %-${1}s %s tree (%s; default: %s)\n" "$(release_var "$release")" "$release" \
            "$(release_tag "$release")" "$(release_default "$release")"
    done
}
