/* bus-util: walking sd-bus a{sv} dictionaries, shared by the daemon, the simulator and the mock BlueZ. */
#pragma once

#include <systemd/sd-bus.h>

/* Called for each entry with its key and the variant's contents signature (e.g. "b", "as"), the
 * message positioned at the variant. Returns < 0 to stop with that error, 0 to have the variant
 * skipped, > 0 when it has read the variant itself. */
typedef int (*bus_dict_entry_t)(sd_bus_message *m, const char *key, const char *contents, void *userdata);

/* Reads a whole a{sv} (entering and leaving it), calling entry for each key. Returns the first
 * error, from sd-bus or from entry (>= 0 otherwise). */
int bus_message_read_dict(sd_bus_message *m, bus_dict_entry_t entry, void *userdata);
