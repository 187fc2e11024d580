/* lookup: a host name resolved off the loop (getaddrinfo in a thread of its own), answered through sd-event. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

typedef struct Lookup Lookup;

#define LOOKUP_ADDRS_MAX 8
#define LOOKUP_ADDR_MAX  64           /* "ffff:...:ffff%<interface>", NUL included */

typedef struct LookupAnswer {
        int error;                    /* 0, or getaddrinfo's EAI_* code */
        int sys_errno;                /* with EAI_SYSTEM: errno */
        size_t n;
        char addrs[LOOKUP_ADDRS_MAX][LOOKUP_ADDR_MAX]; /* numeric, in getaddrinfo's order (RFC 6724) */
} LookupAnswer;

/* Called from the loop once, with the answer; may free the Lookup. */
typedef void (*lookup_handler_t)(Lookup *l, const LookupAnswer *a, void *userdata);

/*
 * Whether `host` is a numeric address (IPv4, or IPv6 with an optional %scope); if so its
 * normal form goes to `ret` (LOOKUP_ADDR_MAX bytes, or NULL). Never looks anything up.
 */
bool lookup_numeric(const char *host, char *ret);

/*
 * Starts looking up `host` (TCP addresses, IPv4 and IPv6). The thread is all getaddrinfo
 * needs: NSS (/etc/hosts, DNS, mDNS) may block, the loop never does. Returns 0 or -errno.
 */
int lookup_start(sd_event *event, const char *host, lookup_handler_t handler, void *userdata, Lookup **ret);

/*
 * Forgets the lookup: its answer is never delivered. A getaddrinfo still running cannot be
 * interrupted; its thread ends by itself when it returns, and frees what it holds.
 */
Lookup *lookup_free(Lookup *l);

/* Text for an answer's error. */
const char *lookup_strerror(const LookupAnswer *a);
