# test_demo: scripts/demo --once, the README's first command, plays its whole scenario on the
# mock BlueZ and a real mosquitto: START on wrap 1, the heat refusal on wrap 2, the session record.
import os
import re
import signal
import subprocess

from kwtestutil import BUILDDIR, SRCDIR


def test_demo_once():
    env = {**os.environ, 'KNEEWRAP_DEMO_BUILD': BUILDDIR}
    env.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
    p = subprocess.Popen([os.path.join(SRCDIR, 'scripts', 'demo'), '--once'], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
        raise AssertionError('scripts/demo --once did not finish in 200 s:\n' + out[-6000:])
    assert p.returncode == 0, out[-6000:]
    assert 'KNEEWRAP_TIME_SCALE=30' in out
    assert 'START 10.00 °C for 900 s' in out
    assert 'heat request refused (heat_too_soon' in out
    assert 'cold session completed after 900 s' in out
    session_lines = [line for line in out.splitlines() if line.startswith('MQTT  kneewrap/wrap_aabbcc001101/session ')]
    assert session_lines and '"outcome":"completed"' in session_lines[-1]
    assert '"reason":"heat_too_soon"' in out
    # What the wraps were told, from the mock's control-point log, in order.
    told = [line.strip() for line in out.splitlines() if line.startswith('  gateway -> ')]
    assert len(told) == 3, told
    assert told[0] == 'gateway -> AA:BB:CC:00:11:01: START cold 10.00 °C for 900 s'
    # Five days left, less the scaled minutes the demo ran before the press (time x30).
    m = re.fullmatch(r'gateway -> AA:BB:CC:00:11:02: DENY \(heat too soon after an injury, (\d+) min left\)', told[1])
    assert m and 7140 <= int(m.group(1)) <= 7200, told[1]
    assert told[2] == 'gateway -> AA:BB:CC:00:11:01: STOP (completed)'
    assert 'demo: stopped' in out
    # It ends with the clinic's HTML report, and says where it is.
    m = re.search(r'^  (/\S+/report-wrap_aabbcc001101\.html)$', out, re.M)
    assert m, out[-3000:]
    page = open(m.group(1)).read()
    assert 'Patient 12' in page and 'id="chart-cold"' in page and 'class="run followed"' in page
