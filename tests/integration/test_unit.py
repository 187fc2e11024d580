# test_unit: the systemd unit is valid (systemd-analyze verify) and tightly sandboxed
# (systemd-analyze security scores it 2.0 or lower); the D-Bus policy and sysusers file parse.
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from kwtestutil import BUILDDIR, KNEEWRAPD, SRCDIR

UNIT = os.environ.get('KW_UNIT', os.path.join(BUILDDIR, 'systemd', 'kneewrapd.service'))

pytestmark = pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='no systemd-analyze')


@pytest.fixture
def unit(tmp_path):
    # verify checks that ExecStart= exists: point the installed path at the built binary.
    text = open(UNIT).read()
    m = re.search(r'^ExecStart=(\S+)', text, re.M)
    assert m and m.group(1).endswith('/kneewrapd')
    path = tmp_path / 'kneewrapd.service'
    path.write_text(text.replace(f'ExecStart={m.group(1)}', f'ExecStart={os.path.abspath(KNEEWRAPD)}'))
    return path


def test_verify(unit):
    r = subprocess.run(['systemd-analyze', 'verify', '--man=no', str(unit)],
                       capture_output=True, text=True, timeout=60)
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    assert r.stderr.strip() == ''


def test_security_score(unit):
    r = subprocess.run(['systemd-analyze', 'security', '--offline=true', '--no-pager', str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r'Overall exposure level for kneewrapd\.service: (\d+\.\d+)', r.stdout)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f'systemd-analyze security: {score}')
    print('\n'.join(line for line in r.stdout.split('\n') if line.startswith('✗')))
    assert score <= 2.0


def test_unit_essentials():
    text = open(UNIT).read()
    for line in ('Type=notify', 'WatchdogSec=30', 'User=kneewrap', 'SupplementaryGroups=bluetooth',
                 'StateDirectory=kneewrap', 'ConfigurationDirectory=kneewrap', 'UMask=0077',
                 'CapabilityBoundingSet=\n', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
                 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'SystemCallFilter=@system-service',
                 # issue 12: the password as a credential that a missing file does not make fatal
                 # (SetCredential= is the default), and bounded memory.
                 'LoadCredential=mqtt-password:/etc/kneewrap/mqtt-password\nSetCredential=mqtt-password:\\n\n',
                 'MemoryMax='):
        assert line in text, line


def test_dbus_policy():
    root = ET.parse(os.path.join(SRCDIR, 'systemd', 'org.kneewrap1.conf')).getroot()
    owners = [p.get('user') for p in root.findall('policy') if p.find("allow[@own='org.kneewrap1']") is not None]
    assert owners == ['kneewrap']
    default = root.find("policy[@context='default']")
    assert default.find("deny[@own='org.kneewrap1']") is not None
    assert default.find("deny[@send_destination='org.kneewrap1']") is not None


def test_dbus_policy_loads(tmp_path):
    # dbus-daemon itself accepts the file (a syntax error would stop it).
    conf = tmp_path / 'bus.conf'
    conf.write_text(f'''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={tmp_path}/sock</listen>
<include>{SRCDIR}/systemd/org.kneewrap1.conf</include></busconfig>''')
    p = subprocess.Popen(['dbus-daemon', '--config-file', str(conf), '--nofork', '--print-address'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = p.stdout.readline().strip()
        assert address.startswith('unix:'), p.stderr.read()
    finally:
        p.terminate()
        p.wait(timeout=5)


def test_sysusers():
    lines = [l.split() for l in open(os.path.join(SRCDIR, 'systemd', 'kneewrap.sysusers'))
             if l.strip() and not l.startswith('#')]
    assert ['u', 'kneewrap', '-'] == lines[0][:3]
    assert ['m', 'kneewrap', 'bluetooth'] in lines
    assert ['g', 'kneewrap-clinic', '-'] in lines
