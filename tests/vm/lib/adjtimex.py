#!/usr/bin/python3
# adjtimex.py show|sync|unsync: the kernel's NTP state, as timesyncd or chrony set it (root).
# "sync" clears STA_UNSYNC with a small maximum error, as an NTP client does once it has a
# server; "unsync" sets it. `date -s` sets it too (the kernel's settimeofday clears NTP state).
import ctypes
import sys

ADJ_MAXERROR, ADJ_ESTERROR, ADJ_STATUS = 0x0004, 0x0008, 0x0010
STA_UNSYNC = 0x0040
TIME_ERROR = 5


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("pad", ctypes.c_int * 11)]


def adjtimex(tx):
    r = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(tx))
    if r < 0:
        raise OSError(ctypes.get_errno(), "adjtimex")
    return r


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "show"
    tx = Timex()
    if what == "sync":
        tx.modes, tx.status, tx.maxerror, tx.esterror = ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR, 0, 10000, 1000
    elif what == "unsync":
        tx.modes, tx.status = ADJ_STATUS, STA_UNSYNC
    elif what != "show":
        sys.exit("usage: adjtimex.py show|sync|unsync")
    r = adjtimex(tx)
    if what != "show":
        tx = Timex()
        r = adjtimex(tx)
    synced = r != TIME_ERROR and not tx.status & STA_UNSYNC
    print("synchronised" if synced else "unsynchronised", f"(state {r}, status 0x{tx.status:x}, maxerror {tx.maxerror})")


if __name__ == "__main__":
    main()
