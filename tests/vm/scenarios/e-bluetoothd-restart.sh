# Scenario e: a heat session runs; bluetoothd is killed (SIGKILL) and started again, btvirt
# and the controllers staying. kneewrap-sim registers its application again by itself, and
# the daemon recovers by itself: reconnects, reconciles the session and records it.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
links=$(kw_links)
regs=$(kw_count "$KW_SIM_LOG" "GATT application registered")
seq0=$(kw_sim_field seq)
# d's 20-minute heat session fills R4's 20 minutes in any 60: the press is refused (DENY 2)
# until that hour has passed on the scaled clock, so press until a START comes.
kw_wait 120 "a heat press accepted" kw_started heat
seq0=$(($(kw_sim_field seq) - 1))
n0=$(kw_n_records)
kw_log "killing bluetoothd at $(kw_sim_field elapsed) s into the session"
kw_kill_bluetoothd KILL
sleep 1
kw_start_bluetoothd
kw_log "bluetoothd is back"
kw_wait_count 20 "$KW_SIM_LOG" "GATT application registered" "$regs"
kw_wait_relinked "$links" 45
kw_log "link back at $(kw_sim_field elapsed) s into the session (state $(kw_sim_field state))"

limit=$((KW_HEAT_MIN * 60 / KW_SCALE + 25))
kw_wait $limit "the session record on MQTT" sh -c "[ \$(grep -cE '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG') -gt $n0 ]"
rec=$(kw_last_record)
echo "$rec" | grep -q '"mode":"heat"' || kw_die "the last record is not the heat session: $rec"
echo "$rec" | grep -q '"outcome":"completed"' || kw_die "the heat session was not completed: $rec"
[ "$(kw_sim_field seq)" -eq $((seq0 + 1)) ] || kw_die "the wrap saw more than one START: $(kw_sim status)"
kw_wait 20 "the wrap idle" kw_sim_is state idle
kw_pass "bluetoothd restarted mid-session: sim re-registered, daemon reconnected, session completed"
