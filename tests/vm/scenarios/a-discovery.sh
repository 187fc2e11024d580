# Scenario a: kneewrapd on hci0 discovers the wrap (kneewrap-sim on hci1) by the therapy
# service UUID, adopts it (allow list), pairs (Just Works: the sim's agent answers as the
# responder), connects and subscribes; the adoption shows in the store and on MQTT.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_world
kw_wait 60 "the wrap connected, bonded, subscribed and idle" kw_wrap_ready
kw_mark adopted

# The bond on both sides of the one bluetoothd.
got=$(busctl get-property org.bluez $KW_DEV_ON_HCI0 org.bluez.Device1 Paired Bonded Connected ServicesResolved | tr '\n' ' ')
[ "$got" = "b true b true b true b true " ] || kw_die "hci0's device for the wrap: Paired Bonded Connected ServicesResolved = $got"
got=$(busctl get-property org.bluez $KW_DEV_ON_HCI1 org.bluez.Device1 Paired Bonded | tr '\n' ' ')
[ "$got" = "b true b true " ] || kw_die "hci1's device for the gateway: Paired Bonded = $got"
name=$(busctl get-property org.bluez $KW_DEV_ON_HCI0 org.bluez.Device1 Name)
[ "$name" = 's "KneeWrap-0001"' ] || kw_die "the wrap's advertised name is $name, expected KneeWrap-0001"

# Discovery ran with the therapy UUID as its filter (the daemon's SetDiscoveryFilter calls).
grep -A12 "member=SetDiscoveryFilter" "$KW_OUT/discovery-filters.log" | grep -q 'fac50001-c475-4e93-816c-09c2563ceaf2' ||
        kw_die "no SetDiscoveryFilter with the therapy UUID: $(head -c 2000 "$KW_OUT/discovery-filters.log")"

# Every notifying characteristic the gateway needs is subscribed.
for uuid in fac50002 fac50003 fac50004 00002a1c; do
        grep -q "$uuid.*a central subscribed" "$KW_SIM_LOG" || kw_die "the gateway did not subscribe to $uuid"
done

kw_ctl wraps | grep -q "$KW_WRAP" || kw_die "kneewrapctl wraps does not list $KW_WRAP"
kw_wait_grep 25 "$KW_MQTT_LOG" "^kneewrap/$KW_WRAP/availability .*online"
kw_pass "discovered by UUID, adopted, paired on both sides, connected, subscribed, online on MQTT"
