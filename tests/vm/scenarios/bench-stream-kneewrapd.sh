# Bench, not a test (bench/bench-vm-stream runs it): kneewrap-sim notifies Therapy Status at
# 50 Hz for 30 s during a cold session; kneewrapd's, dbus-daemon's and bluetoothd's CPU per
# notification, and kneewrapd's memory, into $KW_OUT/bench.txt.
. "$KW_SRC/tests/vm/lib/bench.sh"

kw_ensure_ready 90
kw_bench_session
kw_bench_stream kneewrapd "$(cat $KW_RUN/kneewrapd.pid)"
kw_bench_stop
kw_pass "kneewrapd measured"
