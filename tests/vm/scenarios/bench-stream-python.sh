# Bench, not a test (bench/bench-vm-stream runs it, after bench-stream-kneewrapd): the same
# stream to bench/python-gateway.py in kneewrapd's place, on the same controller and bond.
. "$KW_SRC/tests/vm/lib/bench.sh"

kw_ensure_ready 90
kill -TERM "$(cat $KW_RUN/kneewrapd.pid)"
kw_wait 20 "kneewrapd gone" sh -c "! kill -0 $(cat $KW_RUN/kneewrapd.pid) 2>/dev/null"
sleep 3   # the link goes down with kneewrapd
$KW_PY "$KW_SRC/bench/python-gateway.py" --db $KW_RUN/python-gateway.db "$KW_WRAP_ADDR" \
        > "$KW_OUT/python-gateway.log" 2>&1 &
echo $! > $KW_RUN/python-gateway.pid
kw_wait 60 "python-gateway connected" grep -q "wraps connected, notifications on" "$KW_OUT/python-gateway.log"
kw_bench_session
kw_bench_stream python-gateway "$(cat $KW_RUN/python-gateway.pid)"
kw_bench_stop
kill -TERM "$(cat $KW_RUN/python-gateway.pid)"
kw_pass "python-gateway measured"
