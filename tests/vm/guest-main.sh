#!/bin/sh
# Runs inside the VM (in the chroot, as root): runs the scenarios (a comma-separated list) one
# after the other, each under its own time limit, reports each as "KW-RESULT <name> <status>
# <seconds>", and leaves the first failure's status (or 0) in $KW_OUT/status for run-vm.
# Scenarios of one boot share what they start (tests/vm/lib/kneewrap.sh). Everything here
# prints to the live port.
scenarios="$1"
cd /

echo "KW-MARK guest"
echo "kw-guest: $(uname -r), scenarios $scenarios, limit ${KW_TIMEOUT} s"
t0=$(cut -d' ' -f1 /proc/uptime)
overall=0
for scenario in $(echo "$scenarios" | tr ',' ' '); do
        now=$(cut -d' ' -f1 /proc/uptime)
        left=$(awk -v t0="$t0" -v now="$now" -v lim="$KW_TIMEOUT" 'BEGIN { printf "%d", lim - (now - t0) }')
        # One stuck scenario must not starve the ones after it.
        [ "$left" -le "${KW_SCENARIO_LIMIT:-150}" ] || left=${KW_SCENARIO_LIMIT:-150}
        if [ "$left" -lt 5 ]; then
                echo "kw-guest: no time left for $scenario"
                echo "KW-RESULT $scenario 124 0"
                [ $overall -ne 0 ] || overall=124
                continue
        fi
        echo "KW-MARK start-$scenario"
        # Each scenario in its own session; what it starts in the background (the shared
        # daemons) outlives it, for the scenarios after it.
        timeout -k 5 "$left" setsid /bin/sh -e "$KW_SRC/tests/vm/scenarios/$scenario.sh"
        st=$?
        end=$(cut -d' ' -f1 /proc/uptime)
        [ "$st" -eq 124 ] && echo "kw-guest: scenario $scenario timed out"
        echo "kw-guest: scenario $scenario exited $st"
        echo "KW-RESULT $scenario $st $(awk -v a="$now" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
        [ $overall -ne 0 ] || overall=$st
done

# Stop everything still running (dbus-daemon, bluetoothd, btvirt, test programs) so log files
# are complete; SIGTERM first, so bluetoothd and btmon close their files. Under systemd
# (--init systemd) the units stop at poweroff instead, and the journal is kept.
if [ "${KW_INIT:-busybox}" = systemd ]; then
        journalctl --no-pager -o short-monotonic > "$KW_OUT/journal.log" 2>&1
else
        kill -TERM -1 2>/dev/null
        sleep 0.5
        kill -KILL -1 2>/dev/null
fi
echo "$overall" > "$KW_OUT/status"
sync
