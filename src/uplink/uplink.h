/* uplink: kneewrap-uplink's parts: its configuration, the FHIR client, the transaction Bundles. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* ---- configuration: /etc/kneewrap/uplink.conf (kneewrap-uplink(8)) ---- */

typedef struct UplinkConfig {
        /* [server] */
        char *url;                    /* the FHIR base: transactions are POSTed here */
        char *address;                /* the server's IP: no DNS, and the same as IPAddressAllow= */
        char *ca_file;                /* NULL: the system's CA store */
        unsigned timeout_s;           /* one request, connection included */
        /* [auth] */
        char *token_file;             /* a bearer token; or the credential "uplink-token" */
        char *token_url;              /* OAuth 2 client credentials: the token endpoint */
        char *client_id;
        char *client_secret_file;     /* or the credential "uplink-client-secret" */
        char *scope;
        /* [uplink] */
        char *store_path;             /* kneewrapd's store, read-only */
        char *state_path;             /* the cursor */
        unsigned batch;               /* entries per transaction (records and their Patient/Device) */
        unsigned retry_max_s;         /* the longest wait between tries */
        unsigned poll_s;              /* a look at the store besides inotify */
} UplinkConfig;

void uplink_config_init(UplinkConfig *c);
void uplink_config_done(UplinkConfig *c);
/* Loads `path`; each problem is printed to `errors` as "file:line: [section] key: why". */
int uplink_config_load(UplinkConfig *c, const char *path, FILE *errors);

/* ---- the FHIR client (libcurl) ---- */

typedef struct Fhir Fhir;

/*
 * What an answer means (FHIR R4 http.html and RFC 9110; docs/clinic-uplink.md has the table):
 * only a FHIR server's own refusal of the content, with its OperationOutcome, is for good.
 * Anything that says the server, the way to it, or our credentials are wrong is retried,
 * never skipped: skipping would send every record to the refused list.
 */
typedef enum FhirResult {
        FHIR_OK,                      /* 2xx, and every entry 2xx */
        FHIR_RETRY,                   /* down, timeout, 5xx, 408, 409, 429, not a FHIR answer
                                       * (a 2xx that is no transaction-response included),
                                       * 404/405/406/415 for the whole request (the URL or the
                                       * server is wrong): try again later */
        FHIR_AUTH,                    /* 401 after one fresh token, 403, 407, or no token to be had */
        FHIR_REJECTED,                /* refused for good: 400, 410, 412, 422 with an OperationOutcome,
                                       * 413, 404/405 the server pinned on an entry, or a
                                       * transaction-response with an entry that failed */
} FhirResult;

typedef struct FhirOutcome {
        FhirResult result;
        long http_status;             /* 0: no answer */
        uint64_t retry_after_s;       /* from Retry-After, 0 when absent */
        size_t bytes_sent;
        long entry;                   /* FHIR_REJECTED: the Bundle entry the server named, -1: none */
        char *operation_outcome;      /* the server's OperationOutcome (JSON) or NULL: fhir_outcome_done() */
        char error[256];              /* why, for the log and the status: never a secret */
} FhirOutcome;

void fhir_outcome_done(FhirOutcome *o);

int fhir_client_new(const UplinkConfig *c, Fhir **ret);
Fhir *fhir_client_free(Fhir *f);
/* POSTs a transaction Bundle to the base URL and checks its transaction-response. */
void fhir_client_transaction(Fhir *f, const char *body, size_t n_entries, FhirOutcome *ret);

/* ---- transaction Bundles from the store's changes ---- */

/*
 * Builds one transaction from the changes in `changes`, in order, while it holds at most
 * max_entries entries: each record as its resource, created with ifNoneExist on its
 * identifier the first time (rev 1) and by conditional update once corrected (rev > 1),
 * with the Patient and Device of each wrap it names, so references resolve inside the
 * Bundle. *ret_used: how many changes it covers (the cursor may move past them once the
 * server confirms), of which *ret_skipped had no record any more; *ret_entries: its entries.
 * entry_change (max_entries of them, or NULL): for each entry, the index in `changes` of the
 * record it was added for (a wrap's Patient and Device count for the record that first named
 * it), so a refusal the server pins on an entry is pinned on a record.
 */
int uplink_bundle_build(Store *s, const StoreChange *changes, size_t n, size_t max_entries, int64_t now,
                        json_t **ret, size_t *ret_used, size_t *ret_entries, size_t *ret_skipped,
                        size_t *entry_change);

/* "identifier=<system>|<value>" of a resource, URL-encoded, for ifNoneExist and the update's search. */
int uplink_identifier_query(const json_t *resource, char **ret);
