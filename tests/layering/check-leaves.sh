#!/bin/sh
# check-leaves: the BLE and MQTT clients are leaves. Fails when a leaf's objects need a symbol
# that the daemon's library defines (a call up into the hub), or when a leaf's source
# includes a header of the daemon's.
# usage: check-leaves.sh SRCDIR DAEMON_LIB LEAF_LIB...
set -eu
srcdir=$1 daemon=$2
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

nm -g --defined-only "$daemon" | awk 'NF == 3 { print $3 }' | sort -u > "$tmp/daemon"
for leaf; do
        nm -u "$leaf" | awk 'NF >= 2 { print $NF }' | sort -u > "$tmp/leaf"
        up=$(comm -12 "$tmp/leaf" "$tmp/daemon")
        if [ -n "$up" ]; then
                echo "FAIL: $(basename "$leaf") calls up into the daemon:" $up
                status=1
        else
                echo "ok: $(basename "$leaf") needs nothing the daemon defines"
        fi
done

for dir in ble mqtt; do
        hits=$(grep -ln '#include "\(manager\|wrap\|door\|bus-api\)\.h"' "$srcdir/src/$dir"/*.c "$srcdir/src/$dir"/*.h 2>/dev/null || true)
        if [ -n "$hits" ]; then
                echo "FAIL: src/$dir includes a daemon header:" $hits
                status=1
        else
                echo "ok: src/$dir includes no daemon header"
        fi
done
exit $status
