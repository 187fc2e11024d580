# test_ble_adoption: adoption windows, removal (the bond goes), commands through the daemon, the adapter's power.
import time

import dbus

from test_ble_helpers import COLD, HEAT, addr, press, wrap_id


def test_adoption_window_then_closed(fast_bus, gw):
    a, late = addr(0x50), addr(0x51)
    fast_bus.mock.AddWrap(a)
    g = gw()
    g.wait_log(r"bluetoothd's objects loaded")
    time.sleep(1.0)
    assert fast_bus.wrap(a)["paired"] == 0                 # adoption closed, not allowed: untouched
    g.ctl("adopt", "120")                                   # 120 scaled s: 1.2 s at scale 100
    g.wait_connected(a, timeout=10)
    assert fast_bus.wrap(a)["paired"] == 1
    assert g.sql("SELECT id FROM wraps") == [(wrap_id(a),)]
    g.wait_log(r"adoption window closed", timeout=10)
    fast_bus.mock.AddWrap(late)
    time.sleep(2.0)
    assert fast_bus.wrap(late)["paired"] == 0 and fast_bus.wrap(late)["connected"] == 0
    # The adopted one works.
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)


def test_auto_adopt(fast_bus, gw):
    a = addr(0x52)
    fast_bus.mock.AddWrap(a)
    g = gw(extra="auto_adopt = yes\n")
    g.wait_connected(a)


def test_remove_wrap_removes_the_bond(fast_bus, gw):
    a = addr(0x53)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)
    time.sleep(0.5)
    g.ctl("remove", wrap_id(a))
    g.wait_log(r"bond removed", timeout=10)
    [rec] = g.wait_session(a, "stopped_by_user")
    assert "0200" in g.cp(a)
    st = fast_bus.wrap(a)
    assert st["connected"] == 0 and st["paired"] == 0
    assert g.sql("SELECT count(*) FROM wraps WHERE removed_at IS NULL") == [(0,)]
    # The wrap keeps its old bond until its stop button is held 10 s; then it can be adopted again.
    fast_bus.mock.ResetBond(a)
    g.ctl("adopt", "300")
    g.wait_connected(a, count=2, timeout=15)
    assert fast_bus.wrap(a)["paired"] == 1
    press(fast_bus, a, HEAT)                                # cold would wait for R6's rest
    g.wait_cp(a, "0102a00f8403", timeout=5)


def test_cli_start_and_stop_through_the_daemon(fast_bus, gw):
    a = addr(0x54)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    p = g.ctl("start", wrap_id(a), "cold")
    g.wait_cp(a, "0101e8038403", timeout=5)
    time.sleep(1.0)
    g.ctl("stop", wrap_id(a))
    g.wait_cp(a, "0200", timeout=5)
    [rec] = g.wait_session(a, "stopped_by_user")
    assert rec["source"] == "cli"
    # A second stop has nothing to stop.
    assert g.ctl("stop", wrap_id(a), check=False).returncode != 0
    assert p.returncode == 0


def test_wrap_refusing_start_is_not_started(fast_bus, gw):
    a = addr(0x55)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    fast_bus.mock.SetFault(a, 0x04)                         # sensor failure: the wrap answers START 0x05
    time.sleep(0.3)
    press(fast_bus, a, COLD)
    g.wait_cp(a, "0101e8038403", timeout=5)
    [rec] = g.wait_session(a, "not_started")
    assert rec["started_at"] is None and rec["duration_s"] == 0
    assert g.sql("SELECT start_result FROM sessions WHERE session_id = ?", rec["session_id"]) == [(5,)]
    assert "0202" not in g.cp(a)


def test_adapter_powered_off_is_powered_on_again(fast_bus, gw):
    a = addr(0x56)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a])
    g.wait_connected(a)
    adapter = dbus.Interface(fast_bus.conn.get_object("org.bluez", "/org/bluez/hci0"), "org.freedesktop.DBus.Properties")
    adapter.Set("org.bluez.Adapter1", "Powered", dbus.Boolean(False))
    g.wait_log(r"powering on Bluetooth adapter hci0", timeout=5)
    g.wait_log(r"adapter hci0 powered on", timeout=5)
    g.wait_connected(a, count=2, timeout=15)


def test_adapter_off_and_power_on_no_says_so(fast_bus, gw):
    a = addr(0x57)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a], extra="power_on = no\n")
    g.wait_connected(a)
    adapter = dbus.Interface(fast_bus.conn.get_object("org.bluez", "/org/bluez/hci0"), "org.freedesktop.DBus.Properties")
    adapter.Set("org.bluez.Adapter1", "Powered", dbus.Boolean(False))
    end = time.monotonic() + 5
    while "power_on = no" not in g.notify.last_status():
        assert time.monotonic() < end, g.notify.statuses()
        time.sleep(0.05)
    assert "no usable Bluetooth adapter" in g.notify.last_status()
    assert "powering on" not in g.log()


def test_other_clients_discovery_is_left_alone(fast_bus, gw):
    a = addr(0x58)
    fast_bus.mock.AddWrap(a)
    adapter = dbus.Interface(fast_bus.conn.get_object("org.bluez", "/org/bluez/hci0"), "org.bluez.Adapter1")
    props = dbus.Interface(fast_bus.conn.get_object("org.bluez", "/org/bluez/hci0"), "org.freedesktop.DBus.Properties")
    adapter.StartDiscovery()                                # another client's session, before ours
    g = gw(allow=[a])
    g.wait_connected(a)
    g.wait_log(r"discovery stopped", timeout=5)
    time.sleep(0.5)
    # Our StopDiscovery ended our session only.
    assert bool(props.Get("org.bluez.Adapter1", "Discovering")) is True
    adapter.StopDiscovery()
    time.sleep(0.3)
    assert bool(props.Get("org.bluez.Adapter1", "Discovering")) is False


def test_configured_adapter_missing_says_so(fast_bus, gw):
    a = addr(0x59)
    fast_bus.mock.AddWrap(a)
    g = gw(allow=[a], extra="adapter = hci1\n")
    end = time.monotonic() + 5
    while "adapter hci1 not found" not in g.notify.last_status():
        assert time.monotonic() < end, g.notify.statuses()
        time.sleep(0.05)
    assert "no usable Bluetooth adapter" in g.log()
    time.sleep(1.0)
    assert fast_bus.wrap(a)["connected"] == 0 and fast_bus.wrap(a)["paired"] == 0
