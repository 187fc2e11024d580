# test_ble_link: the BLE link under stress: link loss, bluetoothd restarts, failing connects, restarts of kneewrapd.
import contextlib
import signal
import sqlite3
import time

from test_ble_helpers import COLD, addr, press


def start_cold(bus, g, a):
    g.wait_connected(a)
    press(bus, a, COLD)
    return g.wait_cp(a, "0101e8038403", timeout=5)


def test_link_lost_mid_session_reconnects_and_reconciles(fast_bus, gw):
    a = addr(0x40)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start = start_cold(fast_bus, g, a)
    time.sleep(2.0)
    fast_bus.mock.DropLink(a, False)
    g.wait_log(r"link lost during the session", timeout=5)
    g.wait_connected(a, count=2, timeout=10)
    g.wait_log(r"back: the session is still running", timeout=5)
    stop = g.wait_cp(a, "0201", timeout=15)
    # The session kept its clock through the loss: STOP at the original prescribed end.
    assert 899.0 <= (stop[0][1] - start[0][1]) / 1e6 <= 905.0
    [rec] = g.wait_session(a, "completed")
    assert rec["duration_s"] >= 899
    assert g.cp(a).count("0101e8038403") == 1


def test_link_lost_for_good_is_interrupted(fast_bus, gw):
    a = addr(0x41)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start_cold(fast_bus, g, a)
    time.sleep(1.0)
    t_lost = time.monotonic()
    fast_bus.mock.DropLink(a, True)                       # gone: stops advertising
    [rec] = g.wait_session(a, "interrupted", timeout=30)
    # Not before the prescribed end (9 s) plus the grace period (60 scaled s, at least 5 real s).
    assert time.monotonic() - t_lost >= 7.5
    assert rec["ended_at"] is not None and 50 <= rec["duration_s"] <= 200
    assert "0201" not in g.cp(a)
    assert g.alive()


def test_bluetoothd_restart_mid_session(fast_bus, gw):
    a = addr(0x42)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start_cold(fast_bus, g, a)
    time.sleep(1.5)
    fast_bus.mock.RestartBluez(1000)
    g.wait_log(r"bluetoothd left the bus", timeout=5)
    g.wait_log(r"bluetoothd is on the bus", timeout=10, count=2)
    g.wait_connected(a, count=2, timeout=15)
    g.wait_cp(a, "0201", timeout=15)
    [rec] = g.wait_session(a, "completed")
    assert rec["duration_s"] >= 899
    assert g.cp(a).count("0101e8038403") == 1


def test_connect_fails_five_times_then_succeeds(fast_bus, gw):
    a = addr(0x43)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    fast_bus.set_timing(connect_timeout_ms=1000)          # each failed attempt gives up after 1 s
    fast_bus.mock.FailConnect(a, 5)
    fast_bus.mock.DropLink(a, False)
    t0 = time.monotonic()
    # Backoff 1, 2, 4, 8, 16 s (±20 %) in real time, whatever the time scale, plus 5 x 1 s attempts.
    g.wait_connected(a, count=2, timeout=70)
    took = time.monotonic() - t0
    assert 28 <= took <= 50, took
    log = g.log()
    assert log.count(a + ": Connect failed") == 5
    assert "attempt 5; retrying" in log
    start_cold(fast_bus, g, a)
    g.wait_cp(a, "0201", timeout=15)
    g.wait_session(a, "completed")


def test_stalled_first_connection_and_late_services(fast_bus, gw):
    a, b = addr(0x44), addr(0x45)
    fast_bus.mock.AddWrap(a)
    fast_bus.add_wrap(b, services_late=True)
    fast_bus.mock.StallNextConnect(a)
    g = gw(allow=[a, b])
    g.wait_connected(b, timeout=20)
    g.wait_connected(a, timeout=30)
    for x in (a, b):
        start_cold(fast_bus, g, x)
    for x in (a, b):
        g.wait_cp(x, "0201", timeout=15)
        g.wait_session(x, "completed")


def test_kneewrapd_killed_mid_session_reconciles_on_restart(fast_bus, gw):
    a = addr(0x46)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start = start_cold(fast_bus, g, a)
    time.sleep(2.0)
    g.stop(signal.SIGKILL)                                 # a crash: the record stays open
    assert [s["outcome"] for s in g.sessions(a)] == []     # open records are not listed as sessions yet
    g.start()
    g.wait_log(r"still open from before the restart", timeout=5)
    g.wait_log(r"back: the session is still running", timeout=15)
    stop = g.wait_cp(a, "0201", timeout=15)
    assert 899.0 <= (stop[0][1] - start[0][1]) / 1e6 <= 910.0
    [rec] = g.wait_session(a, "completed")
    assert rec["duration_s"] >= 899


def test_wrap_running_a_session_unknown_at_start_is_stopped_and_recorded(fast_bus, gw):
    a = addr(0x49)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start_cold(fast_bus, g, a)
    time.sleep(1.0)
    g.stop(signal.SIGKILL)
    # The open record is gone (say, a store restored from a backup): the wrap cools unsupervised.
    with contextlib.closing(sqlite3.connect(g.db)) as c, c:
        assert c.execute("DELETE FROM sessions WHERE outcome = 'open'").rowcount == 1
    g.start()
    g.wait_log(r"has no record of", timeout=15)
    g.wait_cp(a, "0202", timeout=15)                       # STOP, reason 2: safety
    [rec] = g.wait_session(a, "stopped_for_safety")
    assert rec["mode"] == "cold" and rec["source"] == "button"
    assert rec["duration_s"] < 900


def test_shutdown_mid_session_stops_the_wrap(fast_bus, gw):
    a = addr(0x47)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    start_cold(fast_bus, g, a)
    time.sleep(1.0)
    g.stop()                                               # SIGTERM
    assert "0203" in g.cp(a)                               # STOP: gateway shutting down
    recs = g.sessions(a)
    assert [r["outcome"] for r in recs] == ["interrupted"]


def test_adapter_removed_and_added(fast_bus, gw):
    a = addr(0x48)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    fast_bus.mock.RemoveAdapter()
    g.wait_log(r"adapter hci0 is gone", timeout=5)
    fast_bus.mock.AddAdapter()
    g.wait_connected(a, count=2, timeout=20)
    start_cold(fast_bus, g, a)
    g.wait_cp(a, "0201", timeout=15)
    g.wait_session(a, "completed")


def test_wrap_not_allowed_is_never_connected(fast_bus, gw):
    a, stranger = addr(0x49), addr(0x4A)
    fast_bus.mock.AddWrap(a)
    fast_bus.mock.AddWrap(stranger)
    g = gw(allow=[a])
    g.wait_connected(a)
    g.wait_log(stranger + r": wrap seen, not adopted", timeout=10)
    time.sleep(2)
    s = fast_bus.wrap(stranger)
    assert s["connected"] == 0 and s["paired"] == 0
    assert g.cp(stranger) == []
    assert g.log().count(stranger + ": wrap seen") == 1
