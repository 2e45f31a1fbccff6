#!/bin/sh
# Lint one manual page: groff with every warning enabled, for the default
# device and for a terminal, then man-db's own rendering (when man is
# installed) at 80 columns. Any line on stderr fails the test; exit 77
# (skipped) when groff is not installed.
set -u
page=$1
if ! command -v groff >/dev/null 2>&1; then
    echo "groff is not installed (Debian: groff-base): $page not checked"
    exit 77
fi
status=0
check() {
    what=$1
    shift
    # stderr only: the rendering itself goes nowhere.
    out=$("$@" 2>&1 >/dev/null)
    if [ -n "$out" ]; then
        echo "$what: $page:"
        echo "$out"
        status=1
    fi
}
check "groff -ww -z -man" groff -ww -z -man "$page"
check "groff -ww -z -man -Tutf8" groff -ww -z -man -Tutf8 "$page"
if command -v man >/dev/null 2>&1; then
    check "man --warnings -l" env MANWIDTH=80 LC_ALL=C.UTF-8 MAN_DISABLE_SECCOMP=1 \
        man --warnings -E UTF-8 -l "$page"
fi
[ "$status" -eq 0 ] && echo "$page: no warnings"
exit "$status"
