# Sourced by VM scenarios: starts the system bus, bluetoothd and btvirt's two emulated LE
# controllers on one virtual radio, and waits until both adapters are powered.
#   hci0 00:AA:01:00:00:00  (the central's side)
#   hci1 00:AA:01:01:00:01  (the peripheral's side)
#   hci2 00:AA:01:02:00:02  (a bystander; only with KW_CONTROLLERS=3)
# Logs go to $KW_OUT; the HCI trace is kept as btsnoop (btmon -r crashes on these traces).

KW_HCI0=00:AA:01:00:00:00
KW_HCI1=00:AA:01:01:00:01
KW_HCI2=00:AA:01:02:00:02
KW_CONTROLLERS=${KW_CONTROLLERS:-2}
KW_PY=/usr/bin/python3

kw_log() {
        echo "kw: $*"
}

kw_die() {
        echo "kw: FAIL: $*"
        exit 1
}

# kw_uptime: whole seconds since boot, without an exec.
kw_uptime() {
        read -r _up _ < /proc/uptime
        echo "${_up%.*}"
}

# kw_wait SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s until it succeeds, for at most
# SECONDS of (guest) time however long each try takes.  Under TCG every exec costs ~50 ms of
# the one vCPU, so a tighter loop only slows down what it waits for.
kw_wait() {
        # A bound only for failing: the guest gets few cycles on a busy 2-core CI host (under
        # TCG), so every bound is stretched by KW_WAIT_FACTOR (default 3); passing never waits.
        read -r _up _ < /proc/uptime
        _secs=$(($1 * ${KW_WAIT_FACTOR:-3})); _end=$((${_up%.*} + _secs)); _what=$2; shift 2
        until "$@" >/dev/null 2>&1; do
                read -r _up _ < /proc/uptime
                [ "${_up%.*}" -lt $_end ] || kw_die "timed out after $_secs s waiting for $_what"
                sleep 0.2
        done
}

kw_mark() {
        echo "KW-MARK $1"
}

kw_start_dbus() {
        mkdir -p /run/dbus
        # The system bus's own policy, plus: root (everything in the VM runs as root) may own
        # kneewrapd's name, which the shipped policy gives only to the user kneewrap.
        cat > /run/dbus/kw-system.conf <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/system.conf</include>
  <policy user="root">
    <allow own="org.kneewrap1"/>
    <allow send_destination="org.kneewrap1"/>
  </policy>
</busconfig>
CONF
        dbus-daemon --config-file=/run/dbus/kw-system.conf --nofork --nopidfile > "$KW_OUT/dbus.log" 2>&1 &
        kw_wait 10 "the system bus" test -S /run/dbus/system_bus_socket
        kw_mark dbus
}

kw_name_has_owner() {
        busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                NameHasOwner s "$1" | grep -q '^b true$'
}

kw_adapter_prop() {
        busctl get-property org.bluez "/org/bluez/$1" org.bluez.Adapter1 "$2"
}

kw_adapter_powered() {
        kw_adapter_prop "$1" Powered | grep -q '^b true$'
}

# kw_adapter_is ADAPTER ADDRESS: the adapter has that address and is powered (one busctl).
kw_adapter_is() {
        [ "$(busctl get-property org.bluez "/org/bluez/$1" org.bluez.Adapter1 Address Powered \
                2>/dev/null | tr '\n' ' ')" = "s \"$2\" b true " ]
}

kw_start_bluez() {
        # The controllers come up first, so that their start overlaps the bus's (under TCG
        # the vCPU runs while qemu serves 9p reads); bluetoothd then finds them at start.
        btmon -w "$KW_OUT/hci.btsnoop" > "$KW_OUT/btmon.log" 2>&1 &
        btvirt -l"$KW_CONTROLLERS" > "$KW_OUT/btvirt.log" 2>&1 &
        kw_start_dbus
        kw_start_bluetoothd
        kw_mark bluetoothd
        _adapters="hci0 hci1"
        [ "$KW_CONTROLLERS" -lt 3 ] || _adapters="$_adapters hci2"
        for a in $_adapters; do
                kw_wait 15 "controller $a" test -e /sys/class/bluetooth/$a
        done
        for a in $_adapters; do
                kw_wait 15 "adapter $a" kw_adapter_prop $a Address
        done
        kw_mark adapters
        # AutoEnable (main.conf) powers them; set Powered ourselves in case a config says no.
        for a in $_adapters; do
                kw_adapter_powered $a || busctl set-property org.bluez "/org/bluez/$a" \
                        org.bluez.Adapter1 Powered b true
        done
        kw_wait 15 "hci0 powered with address $KW_HCI0" kw_adapter_is hci0 "$KW_HCI0"
        kw_wait 15 "hci1 powered with address $KW_HCI1" kw_adapter_is hci1 "$KW_HCI1"
        [ "$KW_CONTROLLERS" -lt 3 ] || kw_wait 15 "hci2 powered with address $KW_HCI2" kw_adapter_is hci2 "$KW_HCI2"
        kw_mark ready
        kw_log "bluez ready: hci0 $KW_HCI0, hci1 $KW_HCI1 powered"
}

# bluetoothd alone, e.g. again after kw_kill_bluetoothd (its log is appended to).
kw_start_bluetoothd() {
        # -d: the daemon's debug log is what one needs when a scenario fails.
        /usr/libexec/bluetooth/bluetoothd -n -d >> "$KW_OUT/bluetoothd.log" 2>&1 &
        echo $! > /run/kw-bluetoothd.pid
        # gdbus sleeps on the bus until the name appears, leaving the vCPU to bluetoothd.
        gdbus wait --system --timeout 20 org.bluez || kw_name_has_owner org.bluez || \
                kw_die "org.bluez did not appear on the system bus"
}

# kw_kill_bluetoothd [SIGNAL]: bluetoothd goes (btvirt and the controllers stay).
kw_kill_bluetoothd() {
        _pid=$(cat /run/kw-bluetoothd.pid)
        kill -"${1:-KILL}" "$_pid"
        kw_wait 10 "bluetoothd to exit" sh -c "! kill -0 $_pid"
        kw_wait 10 "org.bluez to leave the bus" sh -c '! busctl status org.bluez'
}
