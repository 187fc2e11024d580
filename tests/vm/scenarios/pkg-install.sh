# Scenario pkg-install (run-vm --init systemd --deb-dir DIR): the Debian packages on a system
# booted with systemd as PID 1. dpkg -i installs kneewrapd and kneewrap-sim (sysusers creates
# the user, the unit is enabled and started); the real, hardened unit runs kneewrapd as
# kneewrap; systemctl start returns once it sent READY; systemctl reload applies a new allow
# list, and the wrap (kneewrap-sim on hci1) is adopted, paired and connected; a session's
# record reaches mosquitto; systemctl stop during a session sends STOP reason 3 and closes the
# record as interrupted; systemd-analyze security scores the installed unit at most 2.0.
# A packaged build has no time scale: sessions are real minutes, so the scenario starts them
# and stops them (the wrap's stop button, then systemctl stop) instead of waiting.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

KW_SCALE=1                      # the sim's clock too: the wrap must not end a session itself
KW_BUILD=/usr/bin               # kw_sim and kw_ctl use the packaged programs
KW_CONF=/etc/kneewrap/kneewrapd.conf
KW_DB=/var/lib/kneewrap/kneewrap.db

[ "$(cat /proc/1/comm)" = systemd ] || kw_die "PID 1 is $(cat /proc/1/comm), not systemd"
kw_log "systemd $(systemctl --version | sed -n '1s/systemd //p') is PID 1; system state $(systemctl is-system-running)"

# The radio and the broker: btvirt's controllers, bluetoothd under its own unit, mosquitto.
mkdir -p $KW_RUN
btvirt -l2 > "$KW_OUT/btvirt.log" 2>&1 &
kw_wait 15 "controller hci1" test -e /sys/class/bluetooth/hci1
systemctl start bluetooth.service || kw_die "bluetooth.service did not start"
for a in hci0 hci1; do
        kw_wait 30 "adapter $a" kw_adapter_prop $a Address
done
# AutoEnable powers them; under load a controller's first HCI reset can time out, and
# bluetoothd then leaves it off: power it on again (it resets again), as kw_start_bluez does.
for a in hci0 hci1; do
        kw_adapter_powered $a || busctl set-property org.bluez "/org/bluez/$a" org.bluez.Adapter1 Powered b true || true
done
kw_wait 30 "hci0 powered" kw_adapter_is hci0 "$KW_HCI0"
kw_wait 30 "hci1 powered" kw_adapter_is hci1 "$KW_HCI1"
btmgmt --index 1 power off > /dev/null && btmgmt --index 1 bredr off > /dev/null &&
        btmgmt --index 1 power on > /dev/null || kw_die "cannot make hci1 LE-only"
kw_wait 10 "hci1 powered again" kw_adapter_is hci1 "$KW_HCI1"
kw_mark adapters
kw_start_mosquitto

# Install. The postinst creates the user and enables and starts the unit.
set -- "$KW_DEB_DIR"/kneewrapd_*.deb "$KW_DEB_DIR"/kneewrap-sim_*.deb "$KW_DEB_DIR"/kneewrap-uplink_*.deb
[ -f "$1" ] && [ -f "$2" ] && [ -f "$3" ] || kw_die "no packages in '$KW_DEB_DIR'"
dpkg -i "$@" > "$KW_OUT/dpkg.log" 2>&1 || { cat "$KW_OUT/dpkg.log"; kw_die "dpkg -i failed"; }
kw_log "installed: $(dpkg-query -W -f='${Package} ${Version} ${Status}; ' kneewrapd kneewrap-sim kneewrap-uplink)"
kw_mark installed
id -nG kneewrap | tr ' ' '\n' | grep -qx bluetooth || kw_die "user kneewrap is not in bluetooth: $(id kneewrap)"
[ "$(systemctl is-enabled kneewrapd)" = enabled ] || kw_die "kneewrapd.service is not enabled"
kw_wait 20 "kneewrapd started by the postinst" systemctl is-active --quiet kneewrapd
grep -q '^/etc/kneewrap/kneewrapd.conf$' /var/lib/dpkg/info/kneewrapd.conffiles ||
        kw_die "kneewrapd.conf is not a conffile"
# The uplink: its user exists, its unit is enabled and waits for a clinic's uplink.conf.
id kneewrap-uplink > /dev/null || kw_die "no user kneewrap-uplink"
[ "$(systemctl is-enabled kneewrap-uplink)" = enabled ] || kw_die "kneewrap-uplink.service is not enabled"
! systemctl is-active --quiet kneewrap-uplink || kw_die "kneewrap-uplink runs with no uplink.conf"

# The wrap, on the other controller.
kw_start_sim

# Configure: this adapter and the local broker; no wrap allowed yet. Start: systemctl start
# returns only when the daemon has sent READY=1 (Type=notify).
systemctl stop kneewrapd
sed -i -e 's/^#adapter =$/adapter = hci0/' -e 's/^#host = localhost$/host = 127.0.0.1/' "$KW_CONF"
kneewrapd --check-config || kw_die "kneewrapd --check-config refused the edited configuration"
# A packaged build (meson -Dtime_scale=disabled) runs on real time whatever its environment
# says: KNEEWRAP_TIME_SCALE reaches the service through the manager's environment, and is
# ignored with a warning.
systemctl set-environment KNEEWRAP_TIME_SCALE=100
systemctl start kneewrapd || kw_die "systemctl start kneewrapd failed: $(systemctl status kneewrapd --no-pager)"
kw_mark started
systemctl unset-environment KNEEWRAP_TIME_SCALE
kw_wait 10 "the packaged daemon to ignore KNEEWRAP_TIME_SCALE" sh -c \
        "journalctl -b -u kneewrapd --no-pager | grep -q 'KNEEWRAP_TIME_SCALE is set and ignored'"
journalctl -b -u kneewrapd --no-pager | grep -q 'time runs 100 times faster' &&
        kw_die "the packaged daemon honoured KNEEWRAP_TIME_SCALE"
pid=$(systemctl show -p MainPID --value kneewrapd)
[ "$(ps -o user= -p "$pid")" = kneewrap ] || kw_die "kneewrapd runs as $(ps -o user= -p "$pid")"
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/"$pid"/status || kw_die "NoNewPrivileges is not in force"
grep -q '^CapEff:[[:space:]]*0*$' /proc/"$pid"/status || kw_die "kneewrapd has capabilities"
status=$(systemctl show -p StatusText --value kneewrapd)
kw_log "READY; running as kneewrap (pid $pid), status: $status"
kw_wait 20 "MQTT connected (systemd status)" sh -c \
        "systemctl show -p StatusText --value kneewrapd | grep -q 'MQTT connected'"

# Reload: allow the wrap. The daemon adopts it, pairs and connects.
sed -i "s/^#allow = .*/allow = $KW_WRAP_ADDR/" "$KW_CONF"
systemctl reload kneewrapd || kw_die "systemctl reload kneewrapd failed"
kw_wait 90 "the wrap adopted, bonded and connected after the reload" sh -c \
        "$KW_BUILD/kneewrap-sim --control $KW_SIM_SOCK --send status | grep -q 'central=$KW_HCI0' &&
         $KW_BUILD/kneewrap-sim --control $KW_SIM_SOCK --send status | grep -q 'bonded=1' &&
         journalctl -u kneewrapd -o cat | grep -q '$KW_WRAP_ADDR: connected, notifications on'"
[ "$(systemctl show -p MainPID --value kneewrapd)" = "$pid" ] || kw_die "the reload restarted the daemon"
kw_mark connected
kw_log "reload applied: the wrap is connected"

# A session and its record on the broker: cold pressed, then the wrap's stop button.
kw_sim press cold > /dev/null
kw_wait 15 "START cold on the wrap" grep -q "control point: START cold" "$KW_SIM_LOG"
kw_wait 10 "the wrap cooling" kw_sim_is state cooling
kw_sim press stop > /dev/null
kw_wait 15 "STOP reason 0 on the wrap" grep -q "control point: STOP reason 0 " "$KW_SIM_LOG"
kw_wait 20 "the cold record on MQTT" kw_session_record cold stopped_by_user
kw_log "record on MQTT: $(kw_last_record)"

# systemctl stop during a session: STOP reason 3 to the wrap, the record closed (interrupted).
kw_sim press heat > /dev/null
kw_wait 15 "START heat on the wrap" grep -q "control point: START heat" "$KW_SIM_LOG"
kw_wait 10 "the wrap heating" kw_sim_is state heating
systemctl stop kneewrapd || kw_die "systemctl stop kneewrapd failed"
kw_wait 10 "STOP reason 3 on the wrap" grep -q "control point: STOP reason 3 " "$KW_SIM_LOG"
kw_log "wrap: $(grep 'control point: STOP reason 3 ' "$KW_SIM_LOG" | tail -n 1)"
[ "$(systemctl show -p Result --value kneewrapd)" = success ] ||
        kw_die "kneewrapd did not exit cleanly: $(systemctl show -p Result --value kneewrapd)"
rec=$(sqlite3 "$KW_DB" "SELECT outcome, ended_at IS NOT NULL FROM sessions WHERE mode = 'heat'
                        ORDER BY requested_at DESC LIMIT 1")
[ "$rec" = "interrupted|1" ] || kw_die "the heat session's record is '$rec', not closed as interrupted"
# The record reaches the broker: before the exit, or from the outbox at the next start.
if ! kw_session_record heat interrupted; then
        systemctl start kneewrapd || kw_die "kneewrapd did not start again"
        kw_wait 30 "the interrupted record on MQTT" kw_session_record heat interrupted
        systemctl stop kneewrapd
fi
kw_mark stopped

# The installed unit's exposure.
systemd-analyze security kneewrapd.service --no-pager > "$KW_OUT/security.log" 2>&1
score=$(sed -n 's/.*Overall exposure level for kneewrapd.service: \([0-9.]*\).*/\1/p' "$KW_OUT/security.log")
[ -n "$score" ] || { cat "$KW_OUT/security.log"; kw_die "no score from systemd-analyze security"; }
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || kw_die "systemd-analyze security: $score, above 2.0"
kw_pass "installed with dpkg -i, READY under the hardened unit as kneewrap, reload adopted the wrap, records on MQTT, STOP 3 on systemctl stop, security $score"
