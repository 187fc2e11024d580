# Sourced by the bench scenarios (bench-stream-*): the CPU that each process spends on a
# stream of Therapy Status notifications, and the gateway's memory. Not tests: they print
# numbers into $KW_OUT/bench.txt, which bench/bench-vm-stream shows. The world runs at
# KNEEWRAP_TIME_SCALE=1 here, so a cold session lasts its real 10 minutes while it streams.
KW_SCALE=1
. "$KW_SRC/tests/vm/lib/kneewrap.sh"
KW_BENCH_HZ=${KW_BENCH_HZ:-50}
KW_BENCH_SECS=${KW_BENCH_SECS:-30}
KW_BENCH_OUT=$KW_OUT/bench.txt

# CPU time of a process so far, in µs: schedstat's run time (ns), else utime+stime (ticks).
kw_cpu_us() {
        if [ -r "/proc/$1/schedstat" ]; then
                awk '{ printf "%d\n", $1 / 1000 }' "/proc/$1/schedstat"
        else
                awk -v hz="$(getconf CLK_TCK)" '{ printf "%d\n", ($14 + $15) * 1000000 / hz }' "/proc/$1/stat"
        fi
}

# kw_mem PID: "VmRSS Pss Private" in KiB.
kw_mem() {
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status")
        pss=$(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup")
        priv=$(awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s }' "/proc/$1/smaps_rollup")
        echo "$rss $pss $priv"
}

# kw_bench_stream LABEL GATEWAY_PID: streams, and appends one line per process to bench.txt:
# "LABEL process cpu_us notifications us_per_notification".
kw_bench_stream() {
        label=$1 gw=$2
        bus=$(pidof dbus-daemon | awk '{ print $1 }')
        btd=$(pidof bluetoothd | awk '{ print $1 }')
        [ -n "$bus" ] && [ -n "$btd" ] || kw_die "no dbus-daemon or bluetoothd to measure"
        done0=$(kw_count "$KW_SIM_LOG" "stream done")
        g0=$(kw_cpu_us "$gw"); b0=$(kw_cpu_us "$bus"); t0=$(kw_cpu_us "$btd")
        kw_sim stream "$KW_BENCH_HZ" "$KW_BENCH_SECS" > /dev/null || kw_die "the sim cannot stream"
        kw_wait $((KW_BENCH_SECS + 15)) "the stream's end" sh -c \
                "[ \$(grep -c 'stream done' '$KW_SIM_LOG') -gt $done0 ]"
        g1=$(kw_cpu_us "$gw"); b1=$(kw_cpu_us "$bus"); t1=$(kw_cpu_us "$btd")
        n=$(grep 'stream done' "$KW_SIM_LOG" | tail -n 1 | sed -n 's/.*stream done: \([0-9]*\) .*/\1/p')
        [ "${n:-0}" -gt 0 ] || kw_die "the stream sent nothing"
        for row in "$label $((g1 - g0))" "dbus-daemon $((b1 - b0))" "bluetoothd $((t1 - t0))"; do
                set -- $row
                echo "$label $1 $2 $n" | awk '{ printf "%s %s %d %d %.1f\n", $1, $2, $3, $4, $3 / $4 }' >> "$KW_BENCH_OUT"
        done
        echo "$label memory $(kw_mem "$gw")" >> "$KW_BENCH_OUT"
        kw_log "bench $label: $(tail -n 4 "$KW_BENCH_OUT" | tr '\n' ';')"
}

# kw_bench_session: a cold session runs on the wrap (pressed on it, START from the gateway).
kw_bench_session() {
        kw_sim press cold > /dev/null
        kw_wait 20 "the wrap cooling" kw_sim_is state cooling
}

kw_bench_stop() {
        kw_sim press stop > /dev/null
        kw_wait 20 "the wrap idle" kw_sim_is state idle
}
