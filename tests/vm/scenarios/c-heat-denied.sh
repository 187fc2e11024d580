# Scenario c: an injury two days ago (kneewrapctl injury, through the daemon's D-Bus API); HEAT pressed on
# the wrap: the gateway answers DENY (reason 1, heat too soon, with the minutes left) and the
# refusal reaches MQTT. The injury is then marked resolved, for the scenarios after this one.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
kw_ctl injury $KW_WRAP "$(date -u -d '2 days ago' +%Y-%m-%dT%H:%M:%SZ)" || kw_die "kneewrapctl injury failed"
seq0=$(kw_sim_field seq)
kw_sim press heat > /dev/null
kw_wait 10 "DENY on the wrap" grep -q "control point: DENY" "$KW_SIM_LOG"
deny=$(grep "control point: DENY" "$KW_SIM_LOG" | tail -n 1)
kw_log "wrap: $deny"
echo "$deny" | grep -q "DENY reason 1 " || kw_die "DENY was not reason 1 (heat too soon): $deny"
mins=$(echo "$deny" | sed -n 's/.*minutes \([0-9]*\) .*/\1/p')
# Five days left, give or take the scaled minutes that passed.
[ "$mins" -gt $((4 * 1440)) ] && [ "$mins" -le $((5 * 1440)) ] || kw_die "DENY says $mins minutes left, expected about 5 days"
kw_sim_is state idle || kw_die "the wrap is not idle after DENY: $(kw_sim status)"
[ "$(kw_sim_field seq)" = "$seq0" ] || kw_die "the wrap started a session"

kw_wait 25 "the refusal on MQTT" sh -c "grep -E '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG' | grep '\"mode\":\"heat\"' | grep -q '\"reason\":\"heat_too_soon\"'"
kw_last_record
kw_ctl injury $KW_WRAP --resolved || kw_die "kneewrapctl injury --resolved failed"
kw_pass "DENY (heat too soon, $mins minutes) on the wrap, refusal on MQTT"
