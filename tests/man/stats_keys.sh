#!/bin/sh
# libuhmm(3) must name every key of Runtime::stats_json() (the stats= file
# and hmmctl stat --json), as a bold word: a line ".B key" or ".BR key ...".
set -u
source=$1
page=$2
status=0
found=0
for key in $(grep -o 'j\["[a-z_0-9]*"\]' "$source" | sed 's/^j\["\(.*\)"\]$/\1/'); do
    found=$((found + 1))
    if ! grep -qE "^\.BR? $key( |$)" "$page"; then
        echo "$page does not name the stats_json() key $key (as .B $key or .BR $key ...)"
        status=1
    fi
done
if [ "$found" -eq 0 ]; then
    echo "no j[\"key\"] entries found in $source"
    exit 1
fi
[ "$status" -eq 0 ] && echo "$page names all $found keys of stats_json()"
exit "$status"
