#!/bin/sh
# Runs inside the VM (in the chroot, as root): runs one scenario under a time limit and leaves
# its exit status in $KW_OUT/status for run-vm.  Everything here prints to the live port.
scenario="$1"
cd /

echo "KW-MARK guest"
echo "kw-guest: $(uname -r), scenario $scenario, limit ${KW_TIMEOUT} s"
# The scenario runs in its own process group so that whatever it leaves behind
# (daemons, btvirt) can be stopped before the logs are flushed.
timeout -k 5 "$KW_TIMEOUT" setsid /bin/sh -e "$KW_SRC/tests/vm/scenarios/$scenario.sh"
st=$?
[ "$st" -eq 124 ] && echo "kw-guest: scenario timed out after ${KW_TIMEOUT} s"
echo "kw-guest: scenario $scenario exited $st"

# Stop everything still running (dbus-daemon, bluetoothd, btvirt, test programs) so log files
# are complete; SIGTERM first, so bluetoothd and btmon close their files.
kill -TERM -1 2>/dev/null
sleep 0.5
kill -KILL -1 2>/dev/null
echo "$st" > "$KW_OUT/status"
sync
