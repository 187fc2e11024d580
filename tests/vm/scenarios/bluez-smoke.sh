# Scenario bluez-smoke: proves the harness.  bluetoothd with two emulated controllers; a GATT
# peripheral on hci1, a central on hci0 that discovers it, connects, reads, subscribes,
# writes, gets the notification, and pairs (LE Secure Connections, Just Works).
. "$KW_SRC/tests/vm/lib/bluez.sh"

kw_start_bluez
$KW_PY "$KW_SRC/tests/vm/lib/gatt-smoke.py" peripheral --adapter hci1 \
        > "$KW_OUT/peripheral.log" 2>&1 &
periph=$!
$KW_PY "$KW_SRC/tests/vm/lib/gatt-smoke.py" central --adapter hci0 --peer "$KW_HCI1"
kill -0 $periph 2>/dev/null || kw_die "the peripheral died: $(tail -n 5 "$KW_OUT/peripheral.log")"
kw_log "bluez-smoke: ok"
