#!/bin/sh
# uhmm(7) must document every configuration key of the runtime's one knob
# table (lib/runtime/config.cpp) with that table's default, in the form
#   .BR key " (default " value )
# or, for an empty default,
#   .BR key " (default: empty)"
set -u
config=$1
page=$2
status=0
found=0
# Each entry starts: Knob{"name", "default", ...
for entry in $(grep -o 'Knob{"[a-z_]*", "[^"]*"' "$config" | sed 's/^Knob{"\([a-z_]*\)", "\([^"]*\)"$/\1=\2/'); do
    found=$((found + 1))
    key=${entry%%=*}
    value=${entry#*=}
    if [ -z "$value" ]; then
        line=".BR $key \" (default: empty)\""
    else
        line=".BR $key \" (default \" $value )"
    fi
    if ! grep -qxF "$line" "$page"; then
        echo "$page does not document $key with its default '$value' (expected the line: $line)"
        status=1
    fi
done
if [ "$found" -eq 0 ]; then
    echo "no Knob{...} entries found in $config"
    exit 1
fi
[ "$status" -eq 0 ] && echo "$page documents all $found keys with their defaults"
exit "$status"
