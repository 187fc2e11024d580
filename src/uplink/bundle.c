/* bundle: the store's changes as one FHIR transaction, through issue 10's mapping (fhir.h). */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir.h"
#include "uplink.h"
#include "util.h"

int uplink_identifier_query(const json_t *resource, char **ret) {
        json_t *id = json_array_get(json_object_get(resource, "identifier"), 0);
        const char *system = json_string_value(json_object_get(id, "system"));
        const char *value = json_string_value(json_object_get(id, "value"));
        char *s, *v;
        int r;

        if (!system || !value)
                return -EINVAL;
        /* Each part escaped on its own: the "|" between them is the token search's syntax. */
        s = curl_easy_escape(NULL, system, 0);
        v = curl_easy_escape(NULL, value, 0);
        r = s && v && asprintf(ret, "identifier=%s|%s", s, v) >= 0 ? 0 : -ENOMEM;
        curl_free(s);
        curl_free(v);
        return r;
}

/*
 * Appends `resource` under `full_url` with its request: POST with ifNoneExist the first
 * time (a retry of a Bundle the server applied makes no second resource), or a conditional
 * update on the identifier when the record was corrected (the server's copy is replaced;
 * if it never had one, the update creates it).
 */
static int add_entry(json_t *bundle, const char *full_url, json_t *resource, bool update) {
        const char *type = json_string_value(json_object_get(resource, "resourceType"));
        _cleanup_free_ char *query = NULL, *url = NULL;
        json_t *request, *entries;
        int r;

        if (!type) {
                json_decref(resource);
                return -EINVAL;
        }
        r = uplink_identifier_query(resource, &query);
        if (r < 0) {
                json_decref(resource);
                return r;
        }
        if (update) {
                if (asprintf(&url, "%s?%s", type, query) < 0) {
                        json_decref(resource);
                        return -ENOMEM;
                }
                request = json_pack("{s:s, s:s}", "method", "PUT", "url", url);
        } else
                request = json_pack("{s:s, s:s, s:s}", "method", "POST", "url", type, "ifNoneExist", query);
        r = fhir_bundle_add(bundle, full_url, resource);
        if (r < 0) {
                json_decref(request);
                return r;
        }
        entries = json_object_get(bundle, "entry");
        if (!request || json_object_set_new(json_array_get(entries, json_array_size(entries) - 1), "request", request) < 0)
                return -ENOMEM;
        return 0;
}

/* A wrap named in this Bundle: its Patient and Device go in once, referenced by fullUrl. */
typedef struct WrapRef {
        char wrap[WRAP_ID_MAX];
        char patient_urn[FHIR_URN_MAX];
        char device_urn[FHIR_URN_MAX];
        PatientProfile profile;
        bool update;                  /* the wrap itself changed after it was first sent */
} WrapRef;

typedef struct Builder {
        Store *store;
        json_t *bundle;
        WrapRef *wraps;
        size_t n_wraps;
} Builder;

static WrapRef *wrap_find(Builder *b, const char *wrap) {
        for (size_t i = 0; i < b->n_wraps; i++)
                if (streq(b->wraps[i].wrap, wrap))
                        return &b->wraps[i];
        return NULL;
}

/*
 * The first time a wrap is named, its Patient and Device are added (2 entries). A Bundle
 * holds at most max_entries, so at most that many wraps: the array was sized for it.
 */
static int wrap_ref(Builder *b, const char *wrap, bool update, WrapRef **ret) {
        StoredWrap w;
        WrapDeviceInfo info;
        WrapRef *ref = wrap_find(b, wrap);
        int r;

        if (ref) {
                *ret = ref;
                return 0;
        }
        r = store_wrap_get_any(b->store, wrap, &w);
        if (r < 0)
                return r;
        ref = &b->wraps[b->n_wraps];
        *ref = (WrapRef) { .update = update };
        snprintf(ref->wrap, sizeof ref->wrap, "%s", wrap);
        r = store_profile_get(b->store, wrap, &ref->profile);
        if (r < 0)
                return r;
        snprintf(ref->profile.wrap, sizeof ref->profile.wrap, "%s", wrap);
        r = store_device_info_get(b->store, wrap, &info);
        if (r < 0)
                return r;
        r = fhir_urn_uuid(ref->patient_urn);
        if (r >= 0)
                r = fhir_urn_uuid(ref->device_urn);
        if (r < 0)
                return r;
        r = add_entry(b->bundle, ref->patient_urn, fhir_patient(&ref->profile), update);
        if (r >= 0)
                r = add_entry(b->bundle, ref->device_urn, fhir_device(&w, &info, ref->patient_urn), update);
        if (r < 0)
                return r;
        b->n_wraps++;
        *ret = ref;
        return 0;
}

/* The wrap a change's record belongs to, read before anything is added. */
static int change_wrap(Builder *b, const StoreChange *c, char wrap[static WRAP_ID_MAX]) {
        SessionRecord rec;
        DiaryEntry e;
        AlertRecord a;
        RunRecord run;
        int64_t id;
        int r;

        switch (c->kind) {
        case CHANGE_WRAP:
                /* The key is a wrap id here; a longer one is no wrap of ours: skipped (armhf's gcc
                 * rightly warns that snprintf would cut the 40-byte key to 32). */
                if (strlen(c->key) >= WRAP_ID_MAX)
                        return -ENOENT;
                memcpy(wrap, c->key, strlen(c->key) + 1);
                return 0;
        case CHANGE_SESSION:
                r = store_session_get(b->store, c->key, &rec);
                if (r >= 0)
                        snprintf(wrap, WRAP_ID_MAX, "%s", rec.wrap);
                return r;
        case CHANGE_DIARY:
                if (parse_int64(c->key, &id) < 0)
                        return -ENOENT;
                return store_diary_get(b->store, id, wrap, &e);
        case CHANGE_ALERT:
                if (parse_int64(c->key, &id) < 0)
                        return -ENOENT;
                r = store_alert_get(b->store, id, &a);
                if (r >= 0)
                        snprintf(wrap, WRAP_ID_MAX, "%s", a.wrap);
                return r;
        case CHANGE_RUN:
                if (parse_int64(c->key, &id) < 0)
                        return -ENOENT;
                r = store_run_get(b->store, id, &run);
                if (r >= 0)
                        snprintf(wrap, WRAP_ID_MAX, "%s", run.wrap);
                return r;
        default:
                return -ENOENT;   /* a kind this build does not know */
        }
}

static int add_session(Builder *b, const StoreChange *c) {
        SessionRecord rec;
        WrapRef *ref;
        char urn[FHIR_URN_MAX];
        int r;

        r = store_session_get(b->store, c->key, &rec);
        if (r < 0)
                return r;
        r = wrap_ref(b, rec.wrap, false, &ref);
        if (r >= 0)
                r = fhir_urn_uuid(urn);
        if (r < 0)
                return r;
        return add_entry(b->bundle, urn, fhir_procedure(&rec, &ref->profile, ref->patient_urn, ref->device_urn),
                         c->rev > 1);
}

static int add_diary(Builder *b, const StoreChange *c) {
        char wrap[WRAP_ID_MAX], urn[FHIR_URN_MAX];
        DiaryEntry e;
        WrapRef *ref;
        int64_t id;
        int r;

        if (parse_int64(c->key, &id) < 0)
                return -EBADMSG;
        r = store_diary_get(b->store, id, wrap, &e);
        if (r < 0)
                return r;
        r = wrap_ref(b, wrap, false, &ref);
        if (r >= 0)
                r = fhir_urn_uuid(urn);
        if (r < 0)
                return r;
        return add_entry(b->bundle, urn, fhir_pain_observation(wrap, &e, &ref->profile, ref->patient_urn, ref->device_urn),
                         c->rev > 1);
}

static int add_alert(Builder *b, const StoreChange *c) {
        char urn[FHIR_URN_MAX];
        AlertRecord a;
        WrapRef *ref;
        int64_t id;
        int r;

        if (parse_int64(c->key, &id) < 0)
                return -EBADMSG;
        r = store_alert_get(b->store, id, &a);
        if (r < 0)
                return r;
        r = wrap_ref(b, a.wrap, false, &ref);
        if (r >= 0)
                r = fhir_urn_uuid(urn);
        if (r < 0)
                return r;
        return add_entry(b->bundle, urn, fhir_flag(&a, ref->patient_urn, ref->device_urn), c->rev > 1);
}

static int add_run(Builder *b, const StoreChange *c) {
        char urn[FHIR_URN_MAX];
        RunRecord run;
        WrapRef *ref;
        int64_t id;
        int r;

        if (parse_int64(c->key, &id) < 0)
                return -EBADMSG;
        r = store_run_get(b->store, id, &run);
        if (r < 0)
                return r;
        r = wrap_ref(b, run.wrap, false, &ref);
        if (r >= 0)
                r = fhir_urn_uuid(urn);
        if (r < 0)
                return r;
        return add_entry(b->bundle, urn, fhir_run_observation(&run, ref->patient_urn), c->rev > 1);
}

int uplink_bundle_build(Store *s, const StoreChange *changes, size_t n, size_t max_entries, int64_t now,
                        json_t **ret, size_t *ret_used, size_t *ret_entries, size_t *ret_skipped,
                        size_t *entry_change) {
        Builder b = { .store = s };
        size_t used = 0, skipped = 0, entries = 0;
        int r = 0;

        if (max_entries < 3)
                return -EINVAL;   /* a record of a wrap not yet in the Bundle takes 3 */
        b.bundle = fhir_bundle_new("transaction", now);
        b.wraps = calloc(max_entries, sizeof(*b.wraps));
        if (!b.bundle || !b.wraps) {
                r = -ENOMEM;
                goto done;
        }
        for (; used < n; used++) {
                const StoreChange *c = &changes[used];
                char wrap[WRAP_ID_MAX];
                WrapRef *ref;
                size_t need;

                r = change_wrap(&b, c, wrap);
                if (r == -ENOENT) {
                        /* Gone from the store (or a kind unknown here): nothing to send. */
                        skipped++;
                        r = 0;
                        continue;
                }
                if (r < 0)
                        goto done;
                ref = wrap_find(&b, wrap);
                /* A wrap corrected after this Bundle already named it: its update goes next time. */
                if (c->kind == CHANGE_WRAP && ref && c->rev > 1 && !ref->update)
                        break;
                need = (c->kind == CHANGE_WRAP ? 0 : 1) + (ref ? 0 : 2);
                if (entries + need > max_entries)
                        break;
                switch (c->kind) {
                case CHANGE_WRAP: r = wrap_ref(&b, wrap, c->rev > 1, &ref); break;
                case CHANGE_SESSION: r = add_session(&b, c); break;
                case CHANGE_DIARY: r = add_diary(&b, c); break;
                case CHANGE_ALERT: r = add_alert(&b, c); break;
                case CHANGE_RUN: r = add_run(&b, c); break;
                default: break;
                }
                if (r < 0)
                        goto done;
                for (size_t k = entries; entry_change && k < json_array_size(json_object_get(b.bundle, "entry")); k++)
                        entry_change[k] = used;
                entries = json_array_size(json_object_get(b.bundle, "entry"));
        }
done:
        free(b.wraps);
        if (r < 0) {
                json_decref(b.bundle);
                return r;
        }
        *ret = b.bundle;
        *ret_used = used;
        *ret_entries = entries;
        if (ret_skipped)
                *ret_skipped = skipped;
        return 0;
}
