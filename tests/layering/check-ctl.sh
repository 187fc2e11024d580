#!/bin/sh
# check-ctl: kneewrapctl changes state only through the daemon's D-Bus API, so it links
# neither libmosquitto (ldd) nor the BLE client, the MQTT client or the daemon (nm).
# usage: check-ctl.sh KNEEWRAPCTL
set -eu
ctl=$1
status=0

# A cross build's program does not run here: its NEEDED entries say the same.
if deps=$(ldd "$ctl" 2>/dev/null); then
        tool=ldd
else
        deps=$(readelf -d "$ctl" | grep NEEDED)
        tool="readelf -d"
fi
if echo "$deps" | grep -q 'libmosquitto'; then
        echo "FAIL: $ctl links libmosquitto ($tool):"; echo "$deps" | grep libmosquitto
        status=1
else
        echo "ok: no libmosquitto in $tool $ctl"
fi
# Defined or needed: the leaves' and the daemon's entry points, and libmosquitto's.
bad=$(nm "$ctl" | awk 'NF >= 2 { print $NF }' |
      grep -E '^(bluez_|mqtt_(new|free|kick|reload|wrap_|bridge_|connected)|mosquitto_|manager_|door_|wrap_(new|free|on_)|bus_api_)' |
      sort -u || true)
if [ -n "$bad" ]; then
        echo "FAIL: $ctl carries code that is not its own:" $bad
        status=1
else
        echo "ok: no BLE client, MQTT client or daemon code in $ctl"
fi
exit $status
