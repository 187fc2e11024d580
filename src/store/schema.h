/* schema: the ordered SQL steps that build the store's tables, one per PRAGMA user_version. */
#pragma once

#include <stddef.h>

/* "KNWP": marks the file as a kneewrap store, so another program's database is refused. */
#define SCHEMA_APPLICATION_ID 0x4b4e5750

/* The version this build writes. */
size_t schema_version_latest(void);
/* The SQL statements (NULL-terminated) that take the schema from to_version - 1 to
 * to_version; NULL outside 1..latest. */
const char *const *schema_step(size_t to_version);
