/* fhir-client: POSTs transaction Bundles to the clinic's FHIR server with libcurl, and its token. */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "kw-build.h"
#include "log.h"
#include "uplink.h"
#include "util.h"

#define TOKEN_MAX 8192
#define BODY_MAX (64u << 20)     /* a transaction-response of 1000 entries is far less */

struct Fhir {
        const UplinkConfig *config;
        struct curl_slist *resolve;   /* [server] address: host:port:address, for both URLs */
        CURL *curl;                   /* one handle: its connection is kept between Bundles */
        char *token;                  /* NULL: none yet (or none configured) */
        uint64_t token_expires_usec;  /* CLOCK_MONOTONIC; 0: does not expire */
};

typedef struct Buffer {
        char *data;
        size_t n;
        bool too_big;
} Buffer;

static void secret_free(char **p) {
        if (*p) {
                explicit_bzero(*p, strlen(*p));
                free(*p);
                *p = NULL;
        }
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
        Buffer *b = userdata;
        size_t k = size * nmemb;
        char *d;

        if (b->n + k > BODY_MAX) {
                b->too_big = true;
                return 0;
        }
        d = realloc(b->data, b->n + k + 1);
        if (!d)
                return 0;
        memcpy(d + b->n, ptr, k);
        b->n += k;
        d[b->n] = '\0';
        b->data = d;
        return k;
}

/* Retry-After: delta-seconds, or an HTTP-date. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata) {
        uint64_t *retry_after = userdata;
        size_t k = size * nmemb;
        char line[128];

        if (k >= sizeof line || strncasecmp(ptr, "retry-after:", 12) != 0)
                return k;
        memcpy(line, ptr + 12, k - 12);
        line[k - 12] = '\0';
        char *v = line;
        while (*v == ' ' || *v == '\t')
                v++;
        v[strcspn(v, "\r\n")] = '\0';
        int64_t secs;
        if (parse_int64(v, &secs) == 0 && secs >= 0)
                *retry_after = (uint64_t) secs;
        else {
                /* Not curl_getdate(): its time_t is 32 bits on Debian 12's armhf, ours 64. */
                int64_t at, now = (int64_t) time(NULL);
                if (clock_parse_http_date(v, &at) == 0 && at > now)
                        *retry_after = (uint64_t) (at - now);
        }
        return k;
}

/*
 * The loop is blocked in curl for at most one request (timeout); a SIGTERM that arrives
 * meanwhile is pending (sd-event blocks it for its signalfd), so abort the transfer at once
 * instead of finishing it: whatever the server did, the cursor did not move, and the
 * Bundle is sent again, conditionally, next time.
 */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        sigset_t pending;

        if (sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)))
                return 1;
        return 0;
}

static void outcome_set(FhirOutcome *o, FhirResult result, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void outcome_set(FhirOutcome *o, FhirResult result, const char *fmt, ...) {
        va_list ap;

        o->result = result;
        va_start(ap, fmt);
        vsnprintf(o->error, sizeof o->error, fmt, ap);
        va_end(ap);
}

static void easy_common(Fhir *f, Buffer *body, uint64_t *retry_after) {
        const UplinkConfig *c = f->config;

        curl_easy_reset(f->curl);
        curl_easy_setopt(f->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(f->curl, CURLOPT_PROTOCOLS_STR, "https,http");
        curl_easy_setopt(f->curl, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(f->curl, CURLOPT_TIMEOUT, (long) c->timeout_s);
        curl_easy_setopt(f->curl, CURLOPT_CONNECTTIMEOUT, (long) (c->timeout_s < 10 ? c->timeout_s : 10));
        curl_easy_setopt(f->curl, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(f->curl, CURLOPT_SSL_VERIFYHOST, 2L);
        if (c->ca_file)
                curl_easy_setopt(f->curl, CURLOPT_CAINFO, c->ca_file);
        if (f->resolve)
                curl_easy_setopt(f->curl, CURLOPT_RESOLVE, f->resolve);
        curl_easy_setopt(f->curl, CURLOPT_USERAGENT, "kneewrap-uplink/" KW_VERSION);
        curl_easy_setopt(f->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, body);
        curl_easy_setopt(f->curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(f->curl, CURLOPT_HEADERDATA, retry_after);
        curl_easy_setopt(f->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(f->curl, CURLOPT_NOPROGRESS, 0L);
}

int fhir_client_new(const UplinkConfig *c, Fhir **ret) {
        Fhir *f = calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        f->config = c;
        f->curl = curl_easy_init();
        if (!f->curl) {
                free(f);
                return -ENOMEM;
        }
        /* The address pins the server's name (and the token endpoint's, when it is the same
         * host) to it: no DNS, so the unit's IPAddressAllow= needs only that address. The
         * certificate is still checked against the name. */
        if (c->address) {
                const char *urls[] = { c->url, c->token_url };

                for (size_t i = 0; i < ELEMENTSOF(urls); i++) {
                        _cleanup_free_ char *entry = NULL;
                        char *host = NULL, *port = NULL;
                        CURLU *u = urls[i] ? curl_url() : NULL;

                        if (u && curl_url_set(u, CURLUPART_URL, urls[i], 0) == CURLUE_OK &&
                            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
                            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
                            asprintf(&entry, "%s:%s:%s", host, port, c->address) >= 0)
                                f->resolve = curl_slist_append(f->resolve, entry);
                        curl_free(host);
                        curl_free(port);
                        curl_url_cleanup(u);
                }
        }
        *ret = f;
        return 0;
}

Fhir *fhir_client_free(Fhir *f) {
        if (!f)
                return NULL;
        secret_free(&f->token);
        curl_easy_cleanup(f->curl);
        curl_slist_free_all(f->resolve);
        free(f);
        return NULL;
}

/* A secret from its file, or from the systemd credential `credential` when no file is set. */
static int read_secret(const char *path, const char *credential, char **ret) {
        _cleanup_free_ char *cred = NULL;
        const char *dir = getenv("CREDENTIALS_DIRECTORY");

        if (!path) {
                if (!dir || asprintf(&cred, "%s/%s", dir, credential) < 0)
                        return -ENOENT;
                path = cred;
        }
        return read_small_file(path, TOKEN_MAX, ret);
}

/* OAuth 2 client credentials (RFC 6749 4.4), the client authenticated with HTTP Basic. */
static int token_fetch_oauth(Fhir *f, FhirOutcome *o) {
        const UplinkConfig *c = f->config;
        _cleanup_free_ char *form = NULL, *scope = NULL;
        char *secret = NULL;
        Buffer body = { 0 };
        uint64_t retry_after = 0;
        long status = 0;
        json_t *j = NULL;
        CURLcode cc;
        int r;

        r = read_secret(c->client_secret_file, "uplink-client-secret", &secret);
        if (r >= 0 && !*secret) {
                secret_free(&secret);
                r = -ENODATA;
        }
        if (r < 0) {
                outcome_set(o, FHIR_AUTH, "cannot read the client secret: %s",
                            r == -ENODATA ? "it is empty" : strerror(-r));
                return r;
        }
        if (c->scope)
                scope = curl_easy_escape(f->curl, c->scope, 0);
        if (asprintf(&form, "grant_type=client_credentials%s%s", scope ? "&scope=" : "", scope ? scope : "") < 0) {
                secret_free(&secret);
                return -ENOMEM;
        }
        easy_common(f, &body, &retry_after);
        curl_easy_setopt(f->curl, CURLOPT_URL, c->token_url);
        curl_easy_setopt(f->curl, CURLOPT_POSTFIELDS, form);
        curl_easy_setopt(f->curl, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        curl_easy_setopt(f->curl, CURLOPT_USERNAME, c->client_id);
        curl_easy_setopt(f->curl, CURLOPT_PASSWORD, secret);
        cc = curl_easy_perform(f->curl);
        curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(f->curl, CURLOPT_PASSWORD, NULL);
        secret_free(&secret);

        o->retry_after_s = retry_after;
        if (cc != CURLE_OK) {
                outcome_set(o, FHIR_RETRY, "token endpoint: %s", curl_easy_strerror(cc));
                r = -EIO;
        } else if (status != 200) {
                outcome_set(o, status >= 500 || status == 429 ? FHIR_RETRY : FHIR_AUTH,
                            "token endpoint answered HTTP %ld", status);
                r = -EACCES;
        } else {
                const char *tok;
                json_int_t expires;

                j = json_loadb(body.data ? body.data : "", body.n, 0, NULL);
                tok = json_string_value(json_object_get(j, "access_token"));
                expires = json_integer_value(json_object_get(j, "expires_in"));
                if (!tok || !*tok) {
                        outcome_set(o, FHIR_AUTH, "token endpoint: no access_token in its answer");
                        r = -EBADMSG;
                } else {
                        secret_free(&f->token);
                        f->token = strdup(tok);
                        /* Renewed a little before it expires, so a request never carries a stale one. */
                        f->token_expires_usec = expires > 0 ? clock_mono_usec() + (uint64_t) expires * USEC_PER_SEC * 9 / 10 : 0;
                        r = f->token ? 0 : -ENOMEM;
                }
                /* The answer held the token: wipe it before it is freed. */
                if (j) {
                        json_t *t = json_object_get(j, "access_token");
                        if (json_is_string(t))
                                explicit_bzero((char *) json_string_value(t), strlen(json_string_value(t)));
                }
                json_decref(j);
        }
        if (body.data)
                explicit_bzero(body.data, body.n);
        free(body.data);
        return r;
}

/* Makes sure f->token is set when auth is configured. fresh: forget the one we have. */
static int token_get(Fhir *f, bool fresh, FhirOutcome *o) {
        const UplinkConfig *c = f->config;
        int r;

        if (f->token && !fresh && (f->token_expires_usec == 0 || clock_mono_usec() < f->token_expires_usec))
                return 0;
        secret_free(&f->token);
        if (c->token_url)
                return token_fetch_oauth(f, o);
        /* A bearer token file is read again each time: a rotated token is picked up on a 401. */
        r = read_secret(c->token_file, "uplink-token", &f->token);
        if (r >= 0 && !*f->token)
                secret_free(&f->token);   /* the unit's default credential: empty, no token */
        if ((r == -ENOENT && !c->token_file) || (r >= 0 && !f->token))
                return 0;   /* no auth configured: the server takes requests without */
        if (r < 0) {
                outcome_set(o, FHIR_AUTH, "cannot read the token: %s", strerror(-r));
                return r;
        }
        f->token_expires_usec = 0;
        return 0;
}

void fhir_outcome_done(FhirOutcome *o) {
        free(o->operation_outcome);
        o->operation_outcome = NULL;
}

/* Kept as the server sent it (re-serialised), to show a clinic; bounded, as the state is. */
#define OUTCOME_KEEP_MAX (64u << 10)

static void outcome_keep(FhirOutcome *o, const json_t *oo) {
        free(o->operation_outcome);
        o->operation_outcome = json_is_object(oo) ? json_dumps(oo, JSON_COMPACT) : NULL;
        if (o->operation_outcome && strlen(o->operation_outcome) > OUTCOME_KEEP_MAX) {
                free(o->operation_outcome);
                o->operation_outcome = NULL;
        }
}

/* The Bundle entry an OperationOutcome names ("Bundle.entry[3].request.url" in an issue's
 * expression or location), or -1: how a server says which entry of a transaction failed. */
static long outcome_entry(const json_t *oo) {
        const json_t *issue, *where;
        size_t i, k;

        json_array_foreach(json_object_get(oo, "issue"), i, issue) {
                static const char *const fields[] = { "expression", "location" };

                for (size_t f = 0; f < ELEMENTSOF(fields); f++)
                        json_array_foreach(json_object_get(issue, fields[f]), k, where) {
                                const char *p = json_string_value(where);
                                const char *at = p ? strstr(p, "Bundle.entry[") : NULL;
                                long n;
                                char close;

                                if (at && sscanf(at + 13, "%ld%c", &n, &close) == 2 && close == ']' && n >= 0)
                                        return n;
                        }
        }
        return -1;
}

static void check_response(const Buffer *body, size_t n_entries, FhirOutcome *o) {
        json_t *j = json_loadb(body->data ? body->data : "", body->n, 0, NULL);
        json_t *entries = json_object_get(j, "entry");
        const char *type = json_string_value(json_object_get(j, "type"));
        size_t i;
        json_t *e;

        if (!j || !streq_ptr(json_string_value(json_object_get(j, "resourceType")), "Bundle") ||
            !streq_ptr(type, "transaction-response")) {
                /* Not a FHIR server's answer (a proxy's page, say): no verdict on a record. */
                outcome_set(o, FHIR_RETRY, "HTTP %ld but no transaction-response Bundle", o->http_status);
                goto done;
        }
        if (json_array_size(entries) != n_entries) {
                outcome_set(o, FHIR_RETRY, "the transaction-response has %zu entries for %zu sent",
                            json_array_size(entries), n_entries);
                goto done;
        }
        json_array_foreach(entries, i, e) {
                const char *status = json_string_value(json_object_get(json_object_get(e, "response"), "status"));
                if (!status || status[0] != '2') {
                        json_t *oo = json_object_get(json_object_get(e, "response"), "outcome");

                        outcome_set(o, FHIR_REJECTED, "entry %zu answered \"%.40s\"", i, status ? status : "nothing");
                        o->entry = (long) i;
                        outcome_keep(o, oo);
                        goto done;
                }
        }
        o->result = FHIR_OK;
        o->error[0] = '\0';
done:
        json_decref(j);
}

/* An OperationOutcome's first diagnostics or text, to say why in the log. */
static void outcome_text(const json_t *oo, char *buf, size_t size) {
        json_t *issue = json_array_get(json_object_get(oo, "issue"), 0);
        const char *t = json_string_value(json_object_get(issue, "diagnostics"));

        if (!t)
                t = json_string_value(json_object_get(json_object_get(issue, "details"), "text"));
        snprintf(buf, size, "%s", t ? t : "");
}

/* A non-2xx answer: transient, credentials, or the content refused for good (uplink.h). */
static FhirResult classify(long status, bool fhir_answer, long entry) {
        switch (status) {
        case 401: case 403: case 407:
                return FHIR_AUTH;
        case 408: case 409: case 425: case 429:
                /* 409: a version conflict, i.e. contention on the server; the uplink gives it a
                 * few tries before it counts as a refusal (kneewrap-uplink.c). */
                return FHIR_RETRY;
        case 400: case 410: case 412: case 422:
                /* 400 content invalid, 412 conditional criteria matched several resources
                 * (http.html, conditional create and update), 422 a profile or business rule:
                 * the same content gets the same answer. Only from the FHIR server itself: a
                 * proxy's 400 page is not a verdict on a record. */
                return fhir_answer ? FHIR_REJECTED : FHIR_RETRY;
        case 413:
                return FHIR_REJECTED;   /* too big: sent one record at a time, it may go */
        case 404: case 405:
                /* "resource type not supported, or not a FHIR end-point": only when the server
                 * pins it on one entry is it about a record, and not about our [server] url. */
                return fhir_answer && entry >= 0 ? FHIR_REJECTED : FHIR_RETRY;
        default:
                return FHIR_RETRY;
        }
}

static void post(Fhir *f, const char *body_json, size_t n_entries, FhirOutcome *o) {
        _cleanup_free_ char *auth = NULL;
        struct curl_slist *headers = NULL;
        Buffer body = { 0 };
        CURLcode cc;

        o->http_status = 0;
        o->retry_after_s = 0;
        o->entry = -1;
        fhir_outcome_done(o);
        easy_common(f, &body, &o->retry_after_s);
        curl_easy_setopt(f->curl, CURLOPT_URL, f->config->url);
        curl_easy_setopt(f->curl, CURLOPT_POSTFIELDS, body_json);
        curl_easy_setopt(f->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(body_json));
        headers = curl_slist_append(headers, "Content-Type: application/fhir+json");
        headers = curl_slist_append(headers, "Accept: application/fhir+json");
        headers = curl_slist_append(headers, "Prefer: return=minimal");
        /* No "Expect: 100-continue" round trip before each Bundle. */
        headers = curl_slist_append(headers, "Expect:");
        if (f->token) {
                if (asprintf(&auth, "Authorization: Bearer %s", f->token) < 0)
                        auth = NULL;
                if (auth)
                        headers = curl_slist_append(headers, auth);
        }
        curl_easy_setopt(f->curl, CURLOPT_HTTPHEADER, headers);
        cc = curl_easy_perform(f->curl);
        curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &o->http_status);
        curl_easy_setopt(f->curl, CURLOPT_HTTPHEADER, NULL);
        /* The token is not left behind in freed memory: neither our line nor curl's copy. */
        for (struct curl_slist *h = headers; h; h = h->next)
                explicit_bzero(h->data, strlen(h->data));
        curl_slist_free_all(headers);
        if (auth)
                explicit_bzero(auth, strlen(auth));
        o->bytes_sent = strlen(body_json);

        if (cc != CURLE_OK) {
                outcome_set(o, FHIR_RETRY, "%s", curl_easy_strerror(cc));
        } else if (o->http_status >= 200 && o->http_status < 300) {
                check_response(&body, n_entries, o);
        } else {
                json_t *j = json_loadb(body.data ? body.data : "", body.n, 0, NULL);
                bool fhir_answer = streq_ptr(json_string_value(json_object_get(j, "resourceType")), "OperationOutcome");
                char why[160] = "";

                if (fhir_answer) {
                        outcome_text(j, why, sizeof why);
                        o->entry = outcome_entry(j);
                        outcome_keep(o, j);
                }
                json_decref(j);
                o->result = o->http_status >= 500 ? FHIR_RETRY : classify(o->http_status, fhir_answer, o->entry);
                snprintf(o->error, sizeof o->error, "HTTP %ld%s%.160s", o->http_status, *why ? ": " : "", why);
        }
        free(body.data);
}

void fhir_client_transaction(Fhir *f, const char *body_json, size_t n_entries, FhirOutcome *o) {
        *o = (FhirOutcome) { .entry = -1 };
        if (token_get(f, false, o) < 0)
                return;
        post(f, body_json, n_entries, o);
        /* A 401: the token was revoked or rotated. One fresh token, one more try; then back off. */
        if (o->result == FHIR_AUTH && o->http_status == 401) {
                log_notice("The FHIR server refused the token (HTTP 401): fetching a new one");
                if (token_get(f, true, o) < 0)
                        return;
                post(f, body_json, n_entries, o);
        }
}
