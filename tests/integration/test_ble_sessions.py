# test_ble_sessions: button -> rules -> record -> START/DENY -> STOP on simulated wraps, end to end.
import datetime
import time

import pytest

from test_ble_helpers import COLD, HEAT, STOP, TEMP, addr, deny_minutes, press, wrap_id


def test_adopt_cold_session_completed_then_rest_interval(fast_bus, gw):
    a, neighbour = addr(1), addr(2)
    fast_bus.mock.AddWrap(a)
    fast_bus.mock.AddWrap(neighbour)
    g = gw(allow=[a])
    g.wait_connected(a)
    assert "adopted" in g.log()

    t0 = time.monotonic()
    press(fast_bus, a, COLD)
    start = g.wait_cp(a, "0101e8038403", timeout=5)        # START cold 10.00 °C 900 s, to the byte
    assert len(g.cp(a)) == 1
    stop = g.wait_cp(a, "0201", timeout=20)                # STOP completed, sent by the gateway
    wall = time.monotonic() - t0
    # 900 scaled seconds at scale 100 is 9 s; the mock's log is in scaled microseconds.
    assert 899.0 <= (stop[0][1] - start[0][1]) / 1e6 <= 905.0, (start, stop)
    assert 8.5 <= wall <= 14, wall

    [rec] = g.wait_session(a, "completed")
    assert rec["wrap"] == wrap_id(a)
    assert rec["mode"] == "cold" and rec["source"] == "button"
    assert rec["prescribed_s"] == 900 and 899 <= rec["duration_s"] <= 900
    assert rec["compliant"] is True and rec["refusal"] is None
    assert rec["started_at"] and rec["ended_at"] and rec["days_since_injury"] is None
    skin = rec["skin_c"]
    assert skin and skin["min"] <= skin["mean"] <= skin["max"] and 5 < skin["min"] and skin["max"] < 40

    # R6: another cold press right away: DENY 2 with the minutes of rest left.
    press(fast_bus, a, COLD)
    end = time.monotonic() + 5
    while not [h for h in g.cp(a) if h.startswith("03")]:
        assert time.monotonic() < end, g.cp(a)
        time.sleep(0.02)
    reason, minutes = deny_minutes([h for h in g.cp(a) if h.startswith("03")][0])
    assert reason == 2 and 55 <= minutes <= 60, minutes
    [ref] = g.wait_session(a, "refused")
    assert ref["refusal"] == {"reason": "rest_interval", "minutes_left": minutes}
    assert ref["started_at"] is None and ref["ended_at"] is None

    # The neighbour's wrap was seen and never touched.
    nb = fast_bus.wrap(neighbour)
    assert nb["paired"] == 0 and nb["connected"] == 0 and nb["peer_bonded"] == 0
    assert g.cp(neighbour) == []
    assert g.sessions(neighbour) == []
    assert g.sql("SELECT count(*) FROM wraps WHERE address = ?", neighbour) == [(0,)]
    assert "not adopted" in g.log()


def test_heat_refused_within_7_days_then_allowed(fast_bus, gw):
    fresh, old = addr(3), addr(4)
    for x in (fresh, old):
        fast_bus.mock.AddWrap(x)
    g = gw(allow=[fresh, old])
    g.wait_connected(fresh)
    g.wait_connected(old)

    now = datetime.datetime.now(datetime.timezone.utc)
    two_days = (now - datetime.timedelta(days=2)).replace(microsecond=0)
    g.ctl("injury", wrap_id(fresh), two_days.isoformat())
    g.ctl("injury", wrap_id(old), (now - datetime.timedelta(days=8)).replace(microsecond=0).isoformat())

    press(fast_bus, fresh, HEAT)
    end = time.monotonic() + 5
    while not g.cp(fresh):
        assert time.monotonic() < end
        time.sleep(0.02)
    deny = g.cp(fresh)[0]
    reason, minutes = deny_minutes(deny)
    assert reason == 1
    [rec] = g.wait_session(fresh, "refused")
    assert rec["refusal"]["reason"] == "heat_too_soon" and rec["refusal"]["minutes_left"] == minutes
    # The refused request still says what was asked for: the default heat prescription.
    assert rec["prescribed_s"] == 900 and rec["duration_s"] == 0 and rec["started_at"] is None
    # Five days left, less the few scaled minutes the test has run.
    requested = datetime.datetime.fromisoformat(rec["requested_at"])
    expect = (two_days + datetime.timedelta(days=7) - requested).total_seconds() / 60
    assert abs(minutes - expect) <= 1.01, (minutes, expect)
    assert 7100 < minutes <= 5 * 24 * 60
    assert rec["days_since_injury"] is not None and 1.9 <= rec["days_since_injury"] <= 2.2

    press(fast_bus, old, HEAT)
    g.wait_cp(old, "0102a00f8403", timeout=5)              # START heat 40.00 °C 900 s
    g.wait_cp(old, "0201", timeout=20)
    [done] = g.wait_session(old, "completed")
    assert done["mode"] == "heat" and done["compliant"] is False   # R7: only cold counts
    assert 7.9 <= done["days_since_injury"] <= 8.2


def test_skin_limits_stop_for_safety(fast_bus, gw):
    cold, heat = addr(5), addr(6)
    for x in (cold, heat):
        fast_bus.mock.AddWrap(x)
    g = gw(allow=[cold, heat])
    g.wait_connected(cold)
    g.wait_connected(heat)

    press(fast_bus, cold, COLD)
    g.wait_cp(cold, "0101e8038403", timeout=5)
    time.sleep(1.0)
    fast_bus.mock.SetSkin(cold, 7.5)                        # R5: below 8 °C in a cold session
    g.wait_cp(cold, "0202", timeout=5)
    [rec] = g.wait_session(cold, "stopped_for_safety")
    assert rec["skin_c"]["min"] == pytest.approx(7.5, abs=0.01)
    assert rec["duration_s"] < 900 and rec["compliant"] is False

    press(fast_bus, heat, HEAT)
    g.wait_cp(heat, "0102a00f8403", timeout=5)
    time.sleep(0.5)
    fast_bus.mock.SetSkin(heat, 43.6)                       # R5: above 43 °C in a heat session
    g.wait_cp(heat, "0202", timeout=5)
    [rec] = g.wait_session(heat, "stopped_for_safety")
    assert rec["skin_c"]["max"] == pytest.approx(43.6, abs=0.01)

    kinds = g.sql("SELECT wrap, kind FROM alerts ORDER BY id")
    assert (wrap_id(cold), "safety_stop") in kinds and (wrap_id(heat), "safety_stop") in kinds
    assert g.cp(cold).count("0202") == 1


def test_fault_stops_for_safety(fast_bus, gw):
    a = addr(7)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)
    time.sleep(0.5)
    fast_bus.mock.SetFault(a, 0x20)                         # element failure
    g.wait_cp(a, "0202", timeout=5)
    g.wait_session(a, "stopped_for_safety")


def test_stop_button_ends_session_by_user(fast_bus, gw):
    a = addr(8)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)
    time.sleep(1.5)
    press(fast_bus, a, STOP)
    g.wait_cp(a, "0200", timeout=5)                         # STOP reason 0 (user), see docs/bluez.md
    [rec] = g.wait_session(a, "stopped_by_user")
    assert 50 <= rec["duration_s"] < 900
    time.sleep(10)                                          # past the prescribed end: nothing more
    assert g.cp(a).count("0201") == 0 and len(g.sessions(a)) == 1


def test_malformed_notifications_are_counted_never_crash(fast_bus, gw):
    a = addr(9)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)

    bad = [
        (TEMP, bytes([0x00, 0xFF, 0xFF, 0x7F, 0x00])),      # FLOAT NaN (mantissa 0x7FFFFF, exponent 0)
        (TEMP, bytes([0x00, 0x01])),                        # short
        (TEMP, bytes([0x00, 0x10, 0x04, 0x00, 0xFE] + [0] * 10)),  # longer than any valid value
        ("fac50002-c475-4e93-816c-09c2563ceaf2", bytes([1, 1, 0xE8])),   # short Status
        ("fac50003-c475-4e93-816c-09c2563ceaf2", bytes([1])),            # short Button Event
        ("fac50004-c475-4e93-816c-09c2563ceaf2", bytes([0x80])),         # short CP answer
    ]
    for _ in range(5):
        for uuid, value in bad:
            fast_bus.mock.SendRaw(a, uuid, value)
    time.sleep(1.0)
    assert g.alive()
    log = g.log()
    # Logged once per kind, however often it came.
    assert log.count("Temperature Measurement value rejected") == 1
    assert log.count("Therapy Status value rejected") == 1
    assert log.count("Button Event value rejected") == 1
    assert log.count("Control Point value rejected") == 1
    # The session goes on and ends normally; no rejected value became a temperature.
    g.wait_cp(a, "0201", timeout=20)
    [rec] = g.wait_session(a, "completed")
    assert 5 < rec["skin_c"]["min"] and rec["skin_c"]["max"] < 40


def test_eight_wraps_at_once(fast_bus, gw):
    wraps = [addr(0x10 + i) for i in range(8)]
    for x in wraps:
        fast_bus.mock.AddWrap(x)
    g = gw(allow=wraps)
    for x in wraps:
        g.wait_connected(x, timeout=40)
    for x in wraps:
        press(fast_bus, x, COLD)
    for x in wraps:
        g.wait_cp(x, "0101e8038403", timeout=5)
    for x in wraps:
        g.wait_cp(x, "0201", timeout=25)
    for x in wraps:
        [rec] = g.wait_session(x, "completed")
        assert rec["duration_s"] >= 899
    ids = {s["session_id"] for s in g.sessions()}
    assert len(ids) == 8
    lat = [int(v) for v in __import__("re").findall(r"button answered in (\d+) µs", g.log())]
    assert len(lat) == 8
    print("button->START latency µs (8 wraps):", sorted(lat))
