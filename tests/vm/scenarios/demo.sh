# The demo on real BlueZ (scripts/demo-vm): kneewrapd on hci0 adopts kneewrap-sim on hci1;
# COLD is pressed on the wrap, the gateway sends START, then STOP at the prescribed end, and
# the session record arrives on MQTT; HEAT two days after an injury is refused (DENY) and the
# refusal arrives too. Every MQTT message is printed as it comes ("MQTT  topic payload").
KW_BYSTANDER=0
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

say() { echo "demo: $*"; }

say "real bluetoothd with two emulated controllers; mosquitto on 127.0.0.1; time runs $KW_SCALE times faster"
kw_world
say "kneewrapd (hci0) is discovering; kneewrap-sim (hci1) advertises as KneeWrap-0001"
kw_wait 60 "the wrap adopted, paired and connected" kw_wrap_ready
say "the wrap is adopted, paired (Just Works) and connected: $(kw_sim status | cut -d' ' -f2-6)"

say "pressing COLD on the wrap"
kw_sim press cold > /dev/null
kw_wait 10 "START" grep -q "control point: START cold" "$KW_SIM_LOG"
say "the wrap got: $(grep 'control point: START' "$KW_SIM_LOG" | tail -n 1 | sed 's/ from .*: / -> /')"
say "the session lasts $KW_COLD_MIN minutes, $((KW_COLD_MIN * 60 / KW_SCALE)) s here"
kw_wait $((KW_COLD_MIN * 60 / KW_SCALE + 20)) "STOP" grep -q "control point: STOP" "$KW_SIM_LOG"
say "the wrap got: $(grep 'control point: STOP' "$KW_SIM_LOG" | tail -n 1 | sed 's/ from .*: / -> /')"
kw_wait 30 "the session record on MQTT" kw_session_record cold completed
say "the session record is on kneewrap/$KW_WRAP/session"

say "recording an injury two days ago, then pressing HEAT (heat waits 7 days: R2)"
kw_ctl injury $KW_WRAP "$(date -u -d '2 days ago' +%Y-%m-%dT%H:%M:%SZ)" > /dev/null
kw_sim press heat > /dev/null
kw_wait 10 "DENY" grep -q "control point: DENY" "$KW_SIM_LOG"
say "the wrap got: $(grep 'control point: DENY' "$KW_SIM_LOG" | tail -n 1 | sed 's/ from .*: / -> /')"
kw_wait 30 "the refusal on MQTT" sh -c "grep -E '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG' | grep -q heat_too_soon"
sleep 1
say "done: the refusal is recorded and published too"
