# Sourced by the kneewrap VM scenarios: one "world" shared by every scenario of a boot (real
# bluetoothd on btvirt's controllers, mosquitto on loopback, kneewrap-sim as the wrap on hci1,
# kneewrapd on hci0, a non-wrap GATT peripheral on hci2), started by whichever scenario runs
# first, so that a scenario also runs on its own (run-vm --scenario d-link-lost).
# Everything the world starts keeps running after the scenario that started it exits.

KW_CONTROLLERS=3
. "$KW_SRC/tests/vm/lib/bluez.sh"

KW_RUN=/run/kw
KW_SCALE=${KW_SCALE:-40}
KW_WRAP_ADDR=$KW_HCI1
KW_WRAP=wrap_00aa01010001
KW_SIM_SOCK=$KW_RUN/sim.sock
KW_CONF=$KW_RUN/kneewrapd.conf
KW_MQTT_LOG=$KW_OUT/mqtt.log
KW_SIM_LOG=$KW_OUT/sim.log
KW_DAEMON_LOG=$KW_OUT/kneewrapd.log
KW_DEV_ON_HCI0=/org/bluez/hci0/dev_00_AA_01_01_00_01
KW_DEV_ON_HCI1=/org/bluez/hci1/dev_00_AA_01_00_00_00
# The session lengths the daemon prescribes ([therapy]), in minutes; KW_SCALE makes them seconds.
KW_COLD_MIN=10
KW_HEAT_MIN=20

kw_sim() {
        "$KW_BUILD/kneewrap-sim" --control "$KW_SIM_SOCK" --send "$*"
}

# kneewrapctl; asked again while kneewrapd answers "too many requests" (it decides one request
# of a kind per wrap a second of its clock): wait for the request to be decided, never assume
# two requests are far apart.
kw_ctl() {
        local err rc tries=0

        err=$(mktemp)
        while :; do
                "$KW_BUILD/kneewrapctl" --config "$KW_CONF" "$@" 2> "$err"
                rc=$?
                [ $rc -ne 0 ] && [ $tries -lt 1000 ] && grep -q "too many requests" "$err" || break
                tries=$((tries + 1))
                sleep 0.02
        done
        cat "$err" >&2
        rm -f "$err"
        return $rc
}

# kw_sim_field NAME: one field of the sim's "status" answer.
kw_sim_field() {
        kw_sim status | tr ' ' '\n' | sed -n "s/^$1=//p"
}

kw_sim_is() {
        [ "$(kw_sim_field "$1")" = "$2" ]
}

# kw_wait_grep SECONDS FILE PATTERN: waits until an extended regex matches a line of FILE.
kw_wait_grep() {
        kw_wait "$1" "/$3/ in $(basename "$2")" grep -qE "$3" "$2"
}

# kw_count FILE PATTERN: how many lines match (0 when none).
kw_count() {
        grep -cE "$2" "$1" 2>/dev/null || true
}

kw_start_mosquitto() {
        # The VM has no network but loopback, and that starts down.
        ip link set lo up
        cat > $KW_RUN/mosquitto.conf <<CONF
listener 1883 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
CONF
        mosquitto -c $KW_RUN/mosquitto.conf > "$KW_OUT/mosquitto.log" 2>&1 &
        kw_wait 10 "mosquitto" mosquitto_pub -h 127.0.0.1 -t kw/ping -n
        # Everything the gateway publishes, into a file and onto the live port as it comes.
        stdbuf -oL mosquitto_sub -h 127.0.0.1 -v -t 'kneewrap/#' > "$KW_MQTT_LOG" 2>&1 &
        tail -n +1 -f "$KW_MQTT_LOG" | sed -u 's/^/MQTT  /' &
        kw_mark mosquitto
}

kw_start_sim() {
        KNEEWRAP_TIME_SCALE=$KW_SCALE "$KW_BUILD/kneewrap-sim" --adapter hci1 --control "$KW_SIM_SOCK" -v \
                > "$KW_SIM_LOG" 2>&1 &
        echo $! > $KW_RUN/sim.pid
        kw_wait 15 "kneewrap-sim's control socket" kw_sim status
        kw_wait 20 "kneewrap-sim registered on hci1" kw_sim_is registered 1
        kw_mark sim
}

kw_start_daemon() {
        cat > "$KW_CONF" <<CONF
# Written by tests/vm/lib/kneewrap.sh.
[daemon]
log_level = info
[bluetooth]
adapter = hci0
allow = $KW_WRAP_ADDR
[mqtt]
host = 127.0.0.1
client_id = kneewrap-vm
[therapy]
cold_minutes = $KW_COLD_MIN
heat_minutes = $KW_HEAT_MIN
[store]
path = $KW_RUN/kneewrap.db
CONF
        "$KW_BUILD/kneewrapd" --check-config --config "$KW_CONF" > /dev/null || kw_die "bad kneewrapd.conf"
        KNEEWRAP_TIME_SCALE=$KW_SCALE "$KW_BUILD/kneewrapd" --config "$KW_CONF" > "$KW_DAEMON_LOG" 2>&1 &
        echo $! > $KW_RUN/kneewrapd.pid
        kw_mark kneewrapd
}

# A GATT peripheral that is no wrap (another service, another name), for the daemon to ignore.
kw_start_bystander() {
        $KW_PY "$KW_SRC/tests/vm/lib/gatt-smoke.py" peripheral --adapter hci2 > "$KW_OUT/bystander.log" 2>&1 &
        # Any device object under hci2 means a central connected to it; any Connected on hci0's
        # object for it means the daemon connected. Both are watched for the whole boot.
        dbus-monitor --system \
                "type='signal',sender='org.bluez',member='InterfacesAdded',arg0path='/org/bluez/hci2/'" \
                "type='signal',sender='org.bluez',path_namespace='/org/bluez/hci2'" \
                "type='signal',sender='org.bluez',path='/org/bluez/hci0/dev_00_AA_01_02_00_02'" \
                > "$KW_OUT/bystander-signals.log" 2>&1 &
}

kw_world() {
        [ -e $KW_RUN/world ] && return 0
        mkdir -p $KW_RUN
        kw_start_bluez
        # A wrap's controller is LE-only. btvirt's are dual-mode, and on a dual-mode peripheral
        # LE Secure Connections also derives a BR/EDR link key, after which bluetoothd may pick
        # BR/EDR for Device1.Connect (NotAvailable: br-connection-profile-unavailable).
        if [ "${KW_WRAP_BREDR:-off}" = off ]; then
                for i in 1 2; do
                        btmgmt --index $i power off > /dev/null && btmgmt --index $i bredr off > /dev/null &&
                                btmgmt --index $i power on > /dev/null || kw_die "cannot make hci$i LE-only"
                done
                kw_wait 10 "hci1 powered again" kw_adapter_is hci1 "$KW_HCI1"
                kw_wait 10 "hci2 powered again" kw_adapter_is hci2 "$KW_HCI2"
        fi
        # What bluetoothd signals about the wrap's device on hci0, in order (no Value changes).
        dbus-monitor --system \
                "type='signal',sender='org.bluez',path='$KW_DEV_ON_HCI0'" \
                "type='signal',sender='org.bluez',member='InterfacesAdded',arg0path='$KW_DEV_ON_HCI0/'" \
                "type='signal',sender='org.bluez',member='InterfacesRemoved',arg0path='$KW_DEV_ON_HCI0/'" \
                > "$KW_OUT/wrap-device-signals.log" 2>&1 &
        # The discovery filters clients set, to show the daemon filters by the therapy UUID.
        dbus-monitor --system "type='method_call',interface='org.bluez.Adapter1',member='SetDiscoveryFilter'" \
                > "$KW_OUT/discovery-filters.log" 2>&1 &
        # A fresh VM's clock is not synchronised (no NTP here): mark it so, as timesyncd would,
        # or R10 refuses what only a trusted clock allows. Scenario g steps and unmarks it.
        $KW_PY "$KW_SRC/tests/vm/lib/adjtimex.py" sync > /dev/null || kw_die "cannot mark the clock synchronised"
        kw_start_mosquitto
        [ "${KW_BYSTANDER:-1}" = 0 ] || kw_start_bystander
        kw_start_sim
        kw_start_daemon
        touch $KW_RUN/world
        kw_log "world: bluetoothd, mosquitto, kneewrap-sim on hci1, kneewrapd on hci0 (time x$KW_SCALE)"
}

# The wrap is adopted, paired, connected and subscribed: what every later scenario starts from.
kw_wrap_ready() {
        kw_sim_is central "$KW_HCI0" && kw_sim_is bonded 1 && kw_sim_is state idle &&
                grep -E "$KW_WRAP_ADDR: (connected, notifications on|link lost)" "$KW_DAEMON_LOG" | tail -n 1 |
                grep -q "connected, notifications on"
}

kw_ensure_ready() {
        kw_world
        kw_wait "${1:-60}" "the wrap connected, bonded, subscribed and idle" kw_wrap_ready
}

# How often the daemon has had the wrap connected with notifications on (its log).
kw_links() {
        kw_count "$KW_DAEMON_LOG" "$KW_WRAP_ADDR: connected, notifications on"
}

# kw_wait_relinked LINKS SECONDS: the daemon has set up a link since kw_links said LINKS.
kw_wait_relinked() {
        kw_wait "$2" "the daemon to set up the link again" sh -c \
                "[ \$(grep -c '$KW_WRAP_ADDR: connected, notifications on' '$KW_DAEMON_LOG') -gt $1 ]"
}

# kw_wait_count SECONDS FILE PATTERN N: more than N lines of FILE match PATTERN.
kw_wait_count() {
        kw_wait "$1" "more than $4 lines /$3/ in $(basename "$2")" sh -c "[ \$(grep -cE '$3' '$2') -gt $4 ]"
}

# kw_started MODE (for kw_wait): a press of MODE got its START (R4/R6 from earlier scenarios
# may hold it).
kw_started() {
        n=$(kw_count "$KW_SIM_LOG" "control point: START $1")
        kw_sim press "$1" > /dev/null
        sleep 2
        [ "$(kw_count "$KW_SIM_LOG" "control point: START $1")" -gt "$n" ]
}

# kw_session_record MODE OUTCOME: a session record of that mode and outcome arrived on MQTT.
kw_session_record() {
        grep -E "^kneewrap/$KW_WRAP/session " "$KW_MQTT_LOG" | grep "\"mode\":\"$1\"" | grep -q "\"outcome\":\"$2\""
}

kw_n_records() {
        kw_count "$KW_MQTT_LOG" "^kneewrap/$KW_WRAP/session "
}

# kw_wait_records N SECONDS: at least N session records have arrived on MQTT.
kw_wait_records() {
        kw_wait "$2" "$1 session records on MQTT" sh -c "[ \$(grep -cE '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG') -ge $1 ]"
}

kw_last_record() {
        grep -E "^kneewrap/$KW_WRAP/session " "$KW_MQTT_LOG" | tail -n 1
}

kw_pass() {
        kw_log "PASS: $*"
}
