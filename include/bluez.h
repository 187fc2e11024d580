/* bluez: the daemon's BLE central, a BlueZ (org.bluez) client over sd-bus in the one sd-event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manager.h"
#include "wire.h"

/*
 * The client watches org.bluez (NameOwnerChanged), mirrors the objects it needs from
 * ObjectManager (adapters, devices, GATT services and characteristics, Battery1), keeps the
 * configured adapter powered and discovering while an adopted wrap is missing or adoption
 * is open, adopts (pairs, trusts, stores) the wraps config allows, and keeps one link per
 * adopted wrap: connect with backoff, wait for the GATT objects, notifications on. Nothing
 * here decides a session: decoded values go to daemon/wrap.c.
 *
 * Real time, not the scaled clock, times every BLE retry and timeout: the radio and
 * bluetoothd run in real time whatever KNEEWRAP_TIME_SCALE says.
 */

typedef struct BzLink BzLink;

/* Registers the matches and the pairing agent, loads the adopted wraps (wraps_load) and
 * starts watching org.bluez. BlueZ need not be running. */
int bluez_new(Manager *m, Bluez **ret);
/* Stops every session (wraps_shutdown), cancels every call, frees the wraps. */
Bluez *bluez_free(Bluez *b);

/* manager_open_adoption changed m->adoption_until: discover now, and until it ends. */
void bluez_adoption_changed(Bluez *b);
/* manager_remove_wrap: after store_wrap_remove, ends the session, disconnects, removes the
 * bond (Adapter1.RemoveDevice) and frees the Wrap. -ENOENT when the wrap is not known. */
int bluez_remove_wrap(Bluez *b, const char *wrap);

/* For STATUS=: "bluetoothd not running", "no usable adapter: ...", "hci0: 2/3 wraps connected". */
const char *bluez_status(Bluez *b, char *buf, size_t size);
bool bluez_usable(Bluez *b);

/* For daemon/wrap.c. */
int bluez_link_attach(Bluez *b, Wrap *w);
void bluez_link_detach(Bluez *b, Wrap *w);
bool bluez_link_ready(Bluez *b, Wrap *w);
/* Encodes with wire.h and writes the Control Point (with response). A failed write comes
 * back as wrap_on_write_failed(); the answer as wrap_on_response(). -ENOTCONN when down. */
int bluez_write_request(Bluez *b, Wrap *w, const WireRequest *req);
/* Reads Therapy Status; the value comes back as wrap_on_status(). */
int bluez_read_status(Bluez *b, Wrap *w);
