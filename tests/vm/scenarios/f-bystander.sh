# Scenario f: a GATT peripheral that is no wrap advertises on hci2 for the whole boot; the
# gateway never connects to it (nor does anything else).
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
grep -q "advertising" "$KW_OUT/bystander.log" || kw_die "the bystander never advertised: $(tail -n 5 "$KW_OUT/bystander.log")"
# Give the daemon a discovery round with the bystander advertising, if it is discovering.
sleep 3
if grep -q "/org/bluez/hci2/dev_" "$KW_OUT/bystander-signals.log"; then
        grep -B2 -A8 "/org/bluez/hci2/dev_" "$KW_OUT/bystander-signals.log" | head -n 30
        kw_die "a central connected to the bystander on hci2"
fi
if grep -A6 "path=/org/bluez/hci0/dev_00_AA_01_02_00_02" "$KW_OUT/bystander-signals.log" | grep -A1 '"Connected"' | grep -q "boolean true"; then
        kw_die "hci0 connected to the bystander"
fi
busctl get-property org.bluez /org/bluez/hci0/dev_00_AA_01_02_00_02 org.bluez.Device1 Connected 2>/dev/null |
        grep -q true && kw_die "hci0 is connected to the bystander"
kw_pass "the non-wrap peripheral on hci2 was never connected"
