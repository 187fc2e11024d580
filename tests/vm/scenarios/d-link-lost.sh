# Scenario d: a heat session runs; the wrap's advertising and link are killed mid-session
# (kneewrap-sim: advertise off, drop), the wrap carries on alone, then comes back: the gateway
# reconnects, finds the same session still running, and ends it at the prescribed end.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
links=$(kw_links)
starts=$(kw_count "$KW_SIM_LOG" "control point: START heat")
stops=$(kw_count "$KW_SIM_LOG" "control point: STOP")
n0=$(kw_n_records)
seq0=$(kw_sim_field seq)
kw_sim press heat > /dev/null
kw_wait_count 10 "$KW_SIM_LOG" "control point: START heat" "$starts"
sleep 2
kw_sim advertise off > /dev/null
kw_sim drop > /dev/null
kw_wait 10 "the link to go" kw_sim_is central none
kw_log "link dropped at $(kw_sim_field elapsed) s into the session"
sleep 3
kw_sim_is state heating || kw_die "the wrap stopped heating without its gateway: $(kw_sim status)"
kw_sim advertise on > /dev/null
kw_log "advertising again at $(kw_sim_field elapsed) s into the session"
kw_wait_relinked "$links" 30
kw_log "link back at $(kw_sim_field elapsed) s into the session"
kw_wait 10 "the daemon to reconcile" grep -q "$KW_WRAP_ADDR: back: the session is still running" "$KW_DAEMON_LOG"

limit=$((KW_HEAT_MIN * 60 / KW_SCALE + 20))
kw_wait_count $limit "$KW_SIM_LOG" "control point: STOP" "$stops"
kw_log "wrap: $(grep 'control point: STOP' "$KW_SIM_LOG" | tail -n 1)"
kw_wait 25 "the heat session record on MQTT" sh -c "[ \$(grep -cE '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG') -gt $n0 ]"
rec=$(kw_last_record)
echo "$rec" | grep -q '"mode":"heat"' || kw_die "the last record is not the heat session: $rec"
echo "$rec" | grep -q '"outcome":"completed"' || kw_die "the heat session was not completed: $rec"
[ "$(kw_sim_field seq)" -eq $((seq0 + 1)) ] || kw_die "the wrap saw more than one START: $(kw_sim status)"
kw_pass "link lost and back mid-session: reconciled, STOP at the end, one completed record"
