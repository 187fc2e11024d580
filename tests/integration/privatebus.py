# privatebus: a dbus-daemon on a private socket standing in for the system bus, shared by the
# integration tests (kwtestutil, mockbluez) and the benches (bench/kwbench.py); needs neither
# pytest nor python3-dbus, so a bench can import it too.
import os
import shutil
import subprocess
import tempfile

# Anyone may own any name and send anything: a stand-in for the system bus, not the shipped policy.
OPEN_POLICY = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
'''


class PrivateBus:
    """dbus-daemon on <directory>/system_bus_socket: .address, .socket, close(); a context manager.

    Without a directory it makes a temporary one, removed by close(). `config` is a busconfig
    template: {socket} and the keyword arguments given here are filled in.
    """

    def __init__(self, directory=None, config=OPEN_POLICY, **fields):
        self._own_dir = directory is None
        self.dir = tempfile.mkdtemp(prefix='kw-bus-') if directory is None else os.fspath(directory)
        self.socket = os.path.join(self.dir, 'system_bus_socket')
        conf = os.path.join(self.dir, 'bus.conf')
        with open(conf, 'w') as f:
            f.write(config.format(socket=self.socket, **fields))
        self.proc = subprocess.Popen(['dbus-daemon', '--config-file', conf, '--nofork', '--print-address'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.close()
            raise RuntimeError('dbus-daemon did not start')

    def close(self):
        """Ends the daemon (if it still runs); safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc.stdout.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
