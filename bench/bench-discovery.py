#!/usr/bin/python3
# bench-discovery: Home Assistant discovery for 8 wraps, both ways. Starts kneewrapd with 8
# wraps in its store against a private mosquitto, reads back every retained message under the
# discovery prefix, and prints the retained message count and bytes of what it publishes
# (one config per entity) next to what device-based discovery would retain: one config per
# device with its entities under "cmps", the device and origin once, each entity's own keys
# as published. Prints numbers; never passes or fails.
import json
import pathlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'integration'))
from kwmqtt import Broker, Collector, Gateway  # noqa: E402
from privatebus import PrivateBus  # noqa: E402

N = 8


def main():
    with tempfile.TemporaryDirectory() as tmp, PrivateBus() as bus:
        d = pathlib.Path(tmp)
        broker = Broker(d)
        addrs = [f'AA:BB:CC:DD:EE:{i:02X}' for i in range(1, N + 1)]
        gw = Gateway(d, bus.address, broker, seed=addrs)
        try:
            col = Collector(broker, topics=('homeassistant/#',))
            last, stable = -1, 0
            while stable < 10:                      # until nothing new for a second
                time.sleep(0.1)
                n = len(col.messages)
                stable = stable + 1 if n == last else 0
                last = n
            col.close()
            # A fresh subscriber sees exactly what the broker retains.
            col = Collector(broker, topics=('homeassistant/#',))
            time.sleep(1.0)
            retained = {t: p for t, p, r in col.messages if r and p}
            col.close()
        finally:
            gw.stop()
            broker.stop()

    per_entity_bytes = sum(len(t) + len(p) for t, p in retained.items())
    devices = {}
    for t, p in retained.items():
        comp, node, obj = t.split('/')[1:4]
        c = json.loads(p)
        dev = devices.setdefault(node, {'dev': c.pop('device'), 'o': c.pop('origin'), 'cmps': {}})
        c.pop('device', None)
        c.pop('origin', None)
        dev['cmps'][obj] = {'p': comp, **c}
    dev_bytes = sum(len(f'homeassistant/device/{node}/config') + len(json.dumps(v, separators=(',', ':')))
                    for node, v in devices.items())
    largest = max(len(json.dumps(v, separators=(',', ':'))) for v in devices.values())
    print(f'{N} wraps and the gateway: {len(devices)} devices')
    print(f'{"":28}{"retained messages":>18}{"bytes (topic+payload)":>24}')
    print(f'{"per entity (shipped)":28}{len(retained):>18}{per_entity_bytes:>24}')
    print(f'{"device-based (cmps)":28}{len(devices):>18}{dev_bytes:>24}')
    print(f'largest device-based payload: {largest} bytes')


if __name__ == '__main__':
    main()
