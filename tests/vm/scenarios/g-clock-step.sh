# Scenario g (R10): the VM's real clock is stepped back three days with date -s (which, as on
# a Pi booting at a stale time, leaves it unsynchronised); a cold session runs and is recorded
# with clock_synced false. Then the clock is stepped to the right time and marked synchronised
# through adjtimex(), as an NTP client does: the record is corrected and published again
# (clock_synced true, started_at three days later), and a cold press is refused (DENY 2): the
# rest since that session runs on the boot clock, not on the stepped wall clock.
. "$KW_SRC/tests/vm/lib/kneewrap.sh"

kw_ensure_ready
adj() { $KW_PY "$KW_SRC/tests/vm/lib/adjtimex.py" "$@"; }

# R6 from the sessions before this one: wait until a cold press is accepted.
kw_cold_started() {
        n=$(kw_count "$KW_SIM_LOG" "control point: START cold")
        kw_sim press cold > /dev/null
        sleep 2
        [ "$(kw_count "$KW_SIM_LOG" "control point: START cold")" -gt "$n" ]
}

true_now=$(date +%s)
mono0=$(cut -d' ' -f1 /proc/uptime)
date -s "@$((true_now - 3 * 86400))" > /dev/null || kw_die "date -s failed"
adj show | grep -q "^unsynchronised" || kw_die "date -s left the clock synchronised: $(adj show)"
kw_wait 10 "the daemon to see the clock set" grep -q "The system clock was set" "$KW_DAEMON_LOG"
kw_wait 10 "kneewrapctl status to say so" sh -c "'$KW_BUILD/kneewrapctl' --config '$KW_CONF' status | grep -q 'clock not synchronised'"

kw_wait 150 "a cold press accepted (R6 from the sessions before)" kw_cold_started
kw_wait $((KW_COLD_MIN * 60 / KW_SCALE + 20)) "the stale cold record on MQTT" sh -c \
        "grep -E '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG' | grep '\"outcome\":\"completed\"' | grep -q '\"clock_synced\":false'"
stale=$(grep -E "^kneewrap/$KW_WRAP/session " "$KW_MQTT_LOG" | grep '"clock_synced":false' | grep '"outcome":"completed"' | tail -n 1)
sid=$(echo "$stale" | sed -n 's/.*"session_id":"\([^"]*\)".*/\1/p')
kw_log "stale record: $stale"

# NTP answers: the clock goes to the right time, then the kernel is told it is synchronised.
now_up=$(cut -d' ' -f1 /proc/uptime)
date -s "@$(awk -v t="$true_now" -v a="$mono0" -v b="$now_up" 'BEGIN { printf "%d", t + (b - a) }')" > /dev/null
adj sync > /dev/null
adj show | grep -q "^synchronised" || kw_die "adjtimex did not mark the clock synchronised: $(adj show)"
kw_wait 20 "the record published again, corrected" sh -c \
        "grep -E '^kneewrap/$KW_WRAP/session ' '$KW_MQTT_LOG' | grep '\"session_id\":\"$sid\"' | grep -q '\"clock_synced\":true'"
fixed=$(grep -E "^kneewrap/$KW_WRAP/session " "$KW_MQTT_LOG" | grep "\"session_id\":\"$sid\"" | grep '"clock_synced":true' | tail -n 1)
kw_log "corrected record: $fixed"
d0=$(echo "$stale" | sed -n 's/.*"started_at":"\([^"]*\)".*/\1/p')
d1=$(echo "$fixed" | sed -n 's/.*"started_at":"\([^"]*\)".*/\1/p')
shift_s=$(( $(date -d "$d1" +%s) - $(date -d "$d0" +%s) ))
[ "$shift_s" -gt $((3 * 86400 - 600)) ] && [ "$shift_s" -lt $((3 * 86400 + 600)) ] ||
        kw_die "the corrected started_at moved $shift_s s, expected three days"
kw_wait 10 "kneewrapctl status: synchronised" sh -c "'$KW_BUILD/kneewrapctl' --config '$KW_CONF' status | grep -q 'clock synchronised'"

# Three days on the wall clock, seconds on the boot clock: R6 still rests.
n=$(kw_count "$KW_SIM_LOG" "control point: DENY")
kw_sim press cold > /dev/null
kw_wait 10 "DENY on the wrap" sh -c "[ \$(grep -c 'control point: DENY' '$KW_SIM_LOG') -gt $n ]"
deny=$(grep "control point: DENY" "$KW_SIM_LOG" | tail -n 1)
echo "$deny" | grep -q "DENY reason 2 " || kw_die "the cold press after the step was not DENY 2 (rest): $deny"
kw_pass "stale record corrected by $shift_s s and republished at sync; R6 held across the step: $deny"
