#!/bin/sh
# Install this build into a private DESTDIR, then build a program of a
# user's (consumer.cpp) against the installed uhmm only, through
# `pkg-config --cflags --libs uhmm`, and run it. Also checks what a packager
# looks at: the shared library's soname, uhmm.pc's version, and that the
# installed headers need no private header of the tree.
#   install_check.sh BUILD_DIR CONSUMER_CPP VERSION [SANITIZERS]
# SANITIZERS: the build's b_sanitize (none, address,undefined, ...): a
# library built with sanitizers needs programs built with them, as a user of
# such a build would compile theirs.
set -eu
build=$1 consumer=$2 version=$3 sanitize=${4:-none}
dest=$(mktemp -d "${TMPDIR:-/tmp}/uhmm-install-XXXXXX")
trap 'rm -rf "$dest"' EXIT
fail() { echo "install_check: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest/install.log" 2>&1 ||
    { cat "$dest/install.log" >&2; fail "meson install failed"; }

pc=$(find "$dest" -name uhmm.pc | head -n 1)
[ -n "$pc" ] || fail "no uhmm.pc installed"
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$dest"
[ "$(pkg-config --modversion uhmm)" = "$version" ] || fail "uhmm.pc says $(pkg-config --modversion uhmm), not $version"
flags=$(pkg-config --cflags --libs uhmm) || fail "pkg-config --cflags --libs uhmm failed"
echo "pkg-config --cflags --libs uhmm: $flags"

lib=$(find "$dest" -name 'libuhmm.so.*.*.*' | head -n 1)
[ -n "$lib" ] || fail "no versioned libuhmm.so installed"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
case "$soname" in
    libuhmm.so.[0-9]*) echo "soname: $soname" ;;
    *) fail "libuhmm.so has soname '$soname'" ;;
esac
libdir=$(dirname "$lib")
[ -e "$libdir/$soname" ] || fail "$soname is not installed next to $lib"
# Only uhmm's own symbols are exported (lib/libuhmm.map).
foreign=$(nm -D --defined-only -C "$lib" | cut -d' ' -f3- |
    grep -v -e '^uhmm::' -e '^typeinfo for uhmm::' -e '^typeinfo name for uhmm::' -e '^vtable for uhmm::' \
            -e '^VTT for uhmm::' -e '^guard variable for uhmm::' | head -n 5 || true)
[ -z "$foreign" ] || fail "libuhmm.so exports symbols that are not uhmm's: $foreign"

# The user's build: outside the tree, nothing but the installed files.
cd "$dest"
sanitize_flags=
[ "$sanitize" = none ] || sanitize_flags="-fsanitize=$sanitize"
c++ -std=c++20 -Wall -Wextra $sanitize_flags -o consumer "$consumer" $flags || fail "the consumer does not compile and link"
status=0
LD_LIBRARY_PATH="$libdir" ./consumer || status=$?
[ "$status" -eq 77 ] && exit 77
[ "$status" -eq 0 ] || fail "the consumer failed (exit $status)"
