# test_safety_time: issue 8 through the real interfaces, on the mock BlueZ: R5's supervision (a
# silent thermometer, a Status that misreports) and R10 (a stale clock, then NTP) with clock.c's
# seam (KNEEWRAP_CLOCK: the daemon's wall clock offset and the kernel's sync flag, as NTP sets it).
import datetime
import os
import time

import dbus
import pytest

from kwmqtt import Collector, ask, broker  # noqa: F401
from kwmqtt import Gateway as MqttGateway
from kwtestutil import private_bus, until_decided  # noqa: F401
from test_ble_helpers import COLD, HEAT, Gateway, addr, deny_minutes, press, wrap_id

DAY = 86400


def seam(path, wall_offset=0, synced=1):
    path.write_text(f"wall_offset={wall_offset}\nsynced={synced}\n")


def gateway(bus, tmp_path, a, clock=None, **kw):
    bus.mock.AddWrap(a)
    env = {"KNEEWRAP_CLOCK": str(clock)} if clock else {}
    g = Gateway(bus, tmp_path, allow=[a], env=env, **kw).start()
    g.wait_connected(a)
    return g


def injury(bus, wrap, iso):
    conn = dbus.bus.BusConnection(bus.address)
    try:
        m = dbus.Interface(conn.get_object("org.kneewrap1", "/org/kneewrap1"), "org.kneewrap1.Manager")
        until_decided(lambda: m.SetInjury(wrap, iso))
    finally:
        conn.close()


def press_denied(g, bus, a, event):
    """Presses, and returns the DENY the gateway wrote for it: (reason, minutes)."""
    denies = lambda: [h for h in g.cp(a) if h.startswith("03")]
    before = len(denies())
    press(bus, a, event)
    wait_for(lambda: len(denies()) > before, 5, "DENY")
    return deny_minutes(denies()[-1])


def wait_for(pred, timeout=15, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"no {what} in {timeout} s"
        time.sleep(0.1)


def test_silent_thermometer_stops_for_safety(bus, tmp_path):
    """R5: no valid skin reading for 15 s of real time in a session: STOP 2, stopped_for_safety."""
    a = addr(0x81)
    g = gateway(bus, tmp_path, a, scale=None)            # real time: a 15-minute session
    try:
        press(bus, a, COLD)
        g.wait_cp(a, "0101e8038403", timeout=5)
        bus.mock.SetThermometer(a, False)
        g.wait_cp(a, "0202", timeout=30)
        [rec] = g.wait_session(a, "stopped_for_safety")
        assert rec["duration_s"] < 60
        assert "no valid skin reading" in g.log()
    finally:
        g.close()


def test_reported_mode_mismatch_stops_for_safety(fast_bus, tmp_path):
    """R5: the wrap's Status reports heat while the gateway started cold."""
    a = addr(0x82)
    g = gateway(fast_bus, tmp_path, a)
    try:
        press(fast_bus, a, COLD)
        g.wait_cp(a, "0101e8038403", timeout=5)
        time.sleep(0.3)
        fast_bus.mock.ReportMode(a, 2)
        g.wait_cp(a, "0202", timeout=5)
        g.wait_session(a, "stopped_for_safety")
    finally:
        g.close()


def test_stale_clock_injured_today_then_ntp(fast_bus, tmp_path):
    """Defect 1, R2: "injured today" pressed while the clock is three days behind. It counts from
    that moment, and gets the true date once the clock is synchronised: heat waits the full week."""
    a = addr(0x83)
    clock = tmp_path / "clock"
    seam(clock, wall_offset=-3 * DAY, synced=0)
    g = gateway(fast_bus, tmp_path, a, clock=clock)
    w = wrap_id(a)
    try:
        st = g.ctl("status").stdout
        assert "clock not synchronised" in st
        injury(fast_bus, w, "today")
        reason, minutes = press_denied(g, fast_bus, a, HEAT)
        assert reason == 1 and minutes > 7 * 1440 - 30
        [refused] = g.wait_session(a, "refused")
        assert refused["refusal"]["reason"] == "heat_too_soon" and refused["clock_synced"] is False
        assert g.sql("SELECT date, pending FROM injuries") == [(None, "today")]

        seam(clock, wall_offset=0, synced=1)             # NTP answers
        wait_for(lambda: g.sql("SELECT pending FROM injuries") == [(None,)], what="the injury dated")
        [(date,)] = g.sql("SELECT date FROM injuries")
        # The true local date of the press, not three days before it (the daemon's clock runs
        # 100 times fast, so it may already be a day or two later).
        today = datetime.date.today()
        assert today <= datetime.date.fromisoformat(date) <= today + datetime.timedelta(days=2)
        wait_for(lambda: g.sessions(a)[0]["clock_synced"] is True, what="the refusal corrected")
        assert "clock synchronised" in g.ctl("status").stdout

        reason, minutes = press_denied(g, fast_bus, a, HEAT)
        assert reason == 1 and minutes > 6 * 1440     # today's end plus a week, less the fast clock
    finally:
        g.close()


def test_stale_clock_rest_then_ntp_step(fast_bus, tmp_path):
    """Defect 1, R6: a cold session recorded at a stale time, then NTP steps the clock three days
    forward. The rest runs on the boot clock; the record is corrected and published again."""
    a = addr(0x84)
    clock = tmp_path / "clock"
    seam(clock, wall_offset=-3 * DAY, synced=0)
    g = gateway(fast_bus, tmp_path, a, clock=clock)
    try:
        press(fast_bus, a, COLD)
        g.wait_cp(a, "0101e8038403", timeout=5)
        [done] = g.wait_session(a, "completed", timeout=30)
        assert done["clock_synced"] is False
        stale = datetime.datetime.fromisoformat(done["started_at"])

        seam(clock, wall_offset=0, synced=1)
        wait_for(lambda: g.sessions(a)[0]["clock_synced"] is True, what="the record corrected")
        fixed = datetime.datetime.fromisoformat(g.sessions(a)[0]["started_at"])
        assert fixed - stale > datetime.timedelta(days=2)

        reason, minutes = press_denied(g, fast_bus, a, COLD)
        assert reason == 2 and minutes > 0
    finally:
        g.close()


def test_restart_with_clock_behind_unsynced_other_boot(fast_bus, tmp_path):
    """R10 across a reboot with no trusted clock: a cold session of the earlier boot lies at
    least this boot's uptime in the past, and nothing more: DENY 4, clock_unsynced."""
    a = addr(0x85)
    clock = tmp_path / "clock"
    clock.write_text("synced=1\nboot_id=11111111-2222-3333-4444-555555555555\n")
    g = gateway(fast_bus, tmp_path, a, clock=clock)
    try:
        press(fast_bus, a, COLD)
        g.wait_cp(a, "0101e8038403", timeout=5)
        g.wait_session(a, "completed", timeout=30)
        g.stop()
        # A reboot: another boot id, up for a minute, the clock a day behind and not synchronised.
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        clock.write_text(f"synced=0\nwall_offset={-DAY}\nboot_id=66666666-7777-8888-9999-000000000000\n"
                         f"boot_offset={60 - int(up)}\n")
        g.start()
        g.wait_connected(a, count=2)
        reason, minutes = press_denied(g, fast_bus, a, COLD)
        assert reason == 4 and minutes == 0
        refused = [s for s in g.sessions(a) if s["outcome"] == "refused"]
        assert refused[-1]["refusal"]["reason"] == "clock_unsynced"
    finally:
        g.close()


def test_clock_trusted_key(fast_bus, tmp_path):
    """[daemon] clock_trusted: logged at start and shown in the status."""
    a = addr(0x86)
    clock = tmp_path / "clock"
    seam(clock, synced=0)
    fast_bus.mock.AddWrap(a)
    g = Gateway(fast_bus, tmp_path, allow=[a], env={"KNEEWRAP_CLOCK": str(clock)})
    g.conf.write_text(g.conf.read_text().replace("[daemon]\n", "[daemon]\nclock_trusted = yes\n"))
    try:
        g.start()
        g.wait_connected(a)
        assert "clock trusted by configuration" in g.ctl("status").stdout
        assert "clock_trusted = yes declares it trusted" in g.log()
    finally:
        g.close()


def clock_properties(address):
    """D-Bus ClockSynchronized and ClockTrusted."""
    conn = dbus.bus.BusConnection(address)
    try:
        props = dbus.Interface(conn.get_object("org.kneewrap1", "/org/kneewrap1"), "org.freedesktop.DBus.Properties")
        return (bool(props.Get("org.kneewrap1.Manager", "ClockSynchronized")),
                bool(props.Get("org.kneewrap1.Manager", "ClockTrusted")))
    finally:
        conn.close()


def test_mqtt_heat_allowed_follows_r10(tmp_path, private_bus, broker):  # noqa: F811
    """Issue 8: MQTT's "heat allowed" is the door's decision, R10 included. An injury dated a
    month back, on a clock that is not synchronised: nothing proves the week over, so the state
    says heat is not allowed (it said allowed) and the door refuses it as clock_unsynced. The
    state follows the sync as it comes and goes, by itself (no record is made in between), and
    so do the D-Bus properties ClockSynchronized and ClockTrusted."""
    clock = tmp_path / "clock"
    seam(clock, synced=0)
    col = Collector(broker, topics=("kneewrap/#",))
    gw = MqttGateway(tmp_path, private_bus, broker, env={"KNEEWRAP_CLOCK": str(clock)})
    w = gw.wrap
    state = lambda: col.last_json(f"kneewrap/{w}/state") or {}
    try:
        col.wait(lambda: state())
        month_ago = (datetime.date.today() - datetime.timedelta(days=30)).isoformat()
        r = ask(col, f"kneewrap/{w}/set", {"injury": month_ago}, f"kneewrap/{w}/response")
        assert r["status"] == "ok", r
        col.wait(lambda: state().get("injury_date") == month_ago)
        assert state()["heat_allowed"] is False and state()["heat_allowed_at"] is None
        assert clock_properties(private_bus) == (False, False)

        # NTP answers; then loses it. The state is sent again each time (its 60 s refresh
        # would come too late here).
        seam(clock, synced=1)
        col.wait(lambda: state().get("heat_allowed") is True, timeout=15)
        assert clock_properties(private_bus) == (True, True)
        seam(clock, synced=0)
        col.wait(lambda: state().get("heat_allowed") is False, timeout=15)
        assert state()["heat_allowed_at"] is None

        r = ask(col, f"kneewrap/{w}/set", {"action": "start", "mode": "heat"}, f"kneewrap/{w}/response")
        assert r["data"]["outcome"] == "refused" and r["data"]["refusal"]["reason"] == "clock_unsynced", r
    finally:
        gw.stop()
        col.close()
