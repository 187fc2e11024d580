# Scenario h (R5): the gateway sees what it supervises, through real bluetoothd. A heat
# session on a wrap whose thermometer says nothing at all (the "runs to completed"):
# STOP reason 2 after 15 s of real time, well inside the 30 s the session lasts at x40,
# recorded stopped_for_safety. Then a cold session on a wrap whose Status reports heat: STOP
# reason 2 at its first Status. Both faults are set before the press: the VM is slow, and
# the session must not end on its own before the fault could show.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
stops() { kw_count "$KW_SIM_LOG" "control point: STOP reason 2 "; }

s0=$(stops)
kw_sim thermometer off > /dev/null
t0=$(date +%s)
kw_wait 120 "a heat press accepted" kw_started heat
kw_wait 30 "STOP reason 2 for the silent thermometer" sh -c "[ \$(grep -c 'control point: STOP reason 2 ' '$KW_SIM_LOG') -gt $s0 ]"
waited=$(( $(date +%s) - t0 ))
[ "$waited" -ge 12 ] || kw_die "stopped $waited s after the press: before 15 s without a reading?"
kw_sim thermometer on > /dev/null
kw_wait 25 "the heat record stopped_for_safety on MQTT" kw_session_record heat stopped_for_safety

s1=$(stops)
kw_sim report-mode heat > /dev/null
kw_wait 150 "a cold press accepted" kw_started cold
kw_wait 15 "STOP reason 2 for the misreported mode" sh -c "[ \$(grep -c 'control point: STOP reason 2 ' '$KW_SIM_LOG') -gt $s1 ]"
kw_sim report-mode true > /dev/null
kw_wait 25 "the cold record stopped_for_safety on MQTT" kw_session_record cold stopped_for_safety
kw_pass "silent thermometer: STOP 2 after $waited s; misreported mode: STOP 2"
