/* bus-api: the daemon's own D-Bus API, org.kneewrap1.Manager on the system bus, over the one door. */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "bus-api.h"
#include "bus-util.h"
#include "door.h"
#include "clock.h"
#include "kw-build.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wrap.h"

/* Minutes and days above this are nonsense; the rules' bounds then name the real limit. */
#define RX_NUMBER_MAX 100000

struct BusApi {
        Manager *m;
        sd_bus_slot *slot;
        sd_event_source *adoption_timer;   /* AdoptionOpen turns false by itself: tell */

        /* What PropertiesChanged last said (or the first Get saw), to send changes only. */
        bool known;
        bool adoption_open;
        bool store_available;
        bool mqtt_connected;
        bool clock_synchronized;
        bool clock_trusted;
        char *wraps;                       /* the ids joined with spaces */
        char *status;
};

/* ---- what the properties show ---- */

static bool adoption_open(Manager *m) {
        return m->adoption_until > manager_now(m);
}

static char *wraps_joined(Manager *m) {
        size_t size = 1;
        char *s;

        for (Wrap *w = m->wraps; w; w = wrap_next(w))
                size += strlen(wrap_get_id(w)) + 1;
        s = malloc(size);
        if (!s)
                return NULL;
        *s = 0;
        for (Wrap *w = m->wraps; w; w = wrap_next(w)) {
                if (*s)
                        strcat(s, " ");
                strcat(s, wrap_get_id(w));
        }
        return s;
}

static int on_adoption_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        bus_api_changed(userdata);
        return 0;
}

static void adoption_timer_arm(BusApi *a) {
        Manager *m = a->m;
        int64_t left = m->adoption_until - manager_now(m);
        uint64_t now, when;
        int r;

        if (left <= 0 || !m->event) {
                if (a->adoption_timer)
                        (void) sd_event_source_set_enabled(a->adoption_timer, SD_EVENT_OFF);
                return;
        }
        /* The window is on the scaled clock; a little late is right, early would re-arm. */
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        when = now + clock_wait_usec((uint64_t) left * USEC_PER_SEC) + 10 * USEC_PER_MSEC;
        if (a->adoption_timer) {
                r = sd_event_source_set_time(a->adoption_timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(a->adoption_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(m->event, &a->adoption_timer, CLOCK_MONOTONIC, when, USEC_PER_SEC / 10,
                                      on_adoption_timer, a);
        if (r < 0)
                log_warning_errno(r, "D-Bus API: cannot time the end of adoption; AdoptionOpen may not "
                                  "signal its change: %m");
}

void bus_api_changed(BusApi *a) {
        Manager *m;
        const char *changed[8];
        size_t n = 0;
        char *wraps, *status;
        bool v;
        int r;

        if (!a)
                return;
        m = a->m;
        adoption_timer_arm(a);

        wraps = wraps_joined(m);
        status = strdup(m->status ? m->status : "");
        if (!wraps || !status) {
                free(wraps);
                free(status);
                return; /* out of memory: a signal less, nothing worse */
        }

        v = adoption_open(m);
        if (!a->known || v != a->adoption_open)
                changed[n++] = "AdoptionOpen";
        a->adoption_open = v;
        v = m->store != NULL;
        if (!a->known || v != a->store_available)
                changed[n++] = "StoreAvailable";
        a->store_available = v;
        v = mqtt_connected(m->mqtt);
        if (!a->known || v != a->mqtt_connected)
                changed[n++] = "MqttConnected";
        a->mqtt_connected = v;
        v = m->clock_sync > 0;
        if (!a->known || v != a->clock_synchronized)
                changed[n++] = "ClockSynchronized";
        a->clock_synchronized = v;
        v = manager_clock_trusted(m);
        if (!a->known || v != a->clock_trusted)
                changed[n++] = "ClockTrusted";
        a->clock_trusted = v;
        if (!a->known || !streq_ptr(wraps, a->wraps))
                changed[n++] = "Wraps";
        free(a->wraps);
        a->wraps = wraps;
        if (!a->known || !streq_ptr(status, a->status))
                changed[n++] = "Status";
        free(a->status);
        a->status = status;
        changed[n] = NULL;

        /* The first look only records: nobody has seen a value yet that could have changed. */
        if (!a->known) {
                a->known = true;
                return;
        }
        if (n == 0 || !m->bus)
                return;
        r = sd_bus_emit_properties_changed_strv(m->bus, BUS_API_PATH, BUS_API_INTERFACE, (char **) changed);
        if (r < 0)
                log_debug_errno(r, "D-Bus API: cannot emit PropertiesChanged: %m");
}

/* ---- arguments and errors ---- */

/* A wrap's id, from an id or a Bluetooth address, as kneewrapctl takes it. */
static int wrap_arg(const char *arg, char buf[static WRAP_ID_MAX], sd_bus_error *error) {
        if (wrap_id_from_address(arg, buf) == 0)
                return 0;
        if (!*arg)
                return sd_bus_error_set(error, BUS_API_ERROR_INVALID_ARGS, "no wrap given");
        if (strlen(arg) >= WRAP_ID_MAX)
                return sd_bus_error_set(error, BUS_API_ERROR_INVALID_ARGS,
                                        "not a wrap id (wrap_aabbccddeeff) or a Bluetooth address");
        snprintf(buf, WRAP_ID_MAX, "%s", arg);
        return 0;
}

static bool wrap_exists(Manager *m, const char *wrap) {
        StoredWrap sw;

        return wrap_find(m, wrap) || (m->store && store_wrap_get(m->store, wrap, &sw) == 0);
}

/* A one-door call's error as a D-Bus error; `message` is its *ret_error, when it gave one. */
static int one_door_error(Manager *m, sd_bus_error *error, int r, const char *wrap, const char *message) {
        char buf[256];
        const char *name;

        if (!message) {
                snprintf(buf, sizeof buf, "%s", strerror(-r));
                message = buf;
        }
        if (r == -EINVAL)
                name = BUS_API_ERROR_INVALID_ARGS;
        else if (r == -ERANGE)
                name = BUS_API_ERROR_REFUSED;
        else if (r == -ENOENT && wrap && !wrap_exists(m, wrap)) {
                snprintf(buf, sizeof buf, "no adopted wrap is called \"%s\"", wrap);
                message = buf;
                name = BUS_API_ERROR_NO_SUCH_WRAP;
        } else if (r == -ESRCH)
                name = BUS_API_ERROR_NO_SESSION;
        else if (r == -EAGAIN || store_is_broken(r))
                name = BUS_API_ERROR_STORE_UNAVAILABLE;
        else if (r == -ENOBUFS)
                name = BUS_API_ERROR_TOO_MANY;
        else
                name = BUS_API_ERROR_FAILED;
        return sd_bus_error_set(error, name, message);
}

static int source_arg(const char *s, RequestSource *ret, sd_bus_error *error) {
        /* A caller may say it is the command-line tool, for the record; it can never claim
         * to be a wrap's button or the MQTT broker, whose records a clinic reads differently. */
        if (streq(s, "dbus"))
                *ret = SOURCE_DBUS;
        else if (streq(s, "cli"))
                *ret = SOURCE_CLI;
        else
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS,
                                         "source must be \"cli\" or \"dbus\", not \"%s\"", s);
        return 0;
}

/* ---- sessions ---- */

static const char *start_outcome(SessionOutcome o) {
        /* "open" is the store's word for a record not finished yet; a caller wants to hear
         * that the session started. Every other outcome keeps the record's name. */
        return o == OUTCOME_OPEN ? "started" : session_outcome_to_string(o);
}

static int start_session(sd_bus_message *msg, Manager *m, const char *wrap_raw, const char *mode_s,
                         RequestSource source, sd_bus_error *error) {
        SessionRecord rec = { 0 };
        const char *why = NULL;
        char wrap[WRAP_ID_MAX], message[256];
        int mode, r;

        r = wrap_arg(wrap_raw, wrap, error);
        if (r < 0)
                return r;
        mode = therapy_mode_from_string(mode_s);
        if (mode != THERAPY_COLD && mode != THERAPY_HEAT)
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS,
                                         "mode must be \"cold\" or \"heat\", not \"%s\"", mode_s);

        r = door_start(m, wrap, (TherapyMode) mode, source, 0, &rec, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);

        if (rec.outcome == OUTCOME_OPEN)
                snprintf(message, sizeof message, "%s at %d.%02d °C for %u min", therapy_mode_to_string(rec.mode),
                         (int) (rec.setpoint / 100), abs(rec.setpoint % 100), (unsigned) (rec.prescribed_s / 60));
        else
                snprintf(message, sizeof message, "%s", why ? why : session_outcome_to_string(rec.outcome));

        return sd_bus_reply_method_return(msg, "sssqs", rec.session_id, start_outcome(rec.outcome),
                                          rec.refusal != REFUSAL_NONE ? refusal_reason_to_string(rec.refusal) : "", rec.minutes_left, message);
}

/*
 * Authority, enforced here as well as in the bus policy (org.kneewrap1.conf), from the sender's
 * credentials as the bus reports them: any caller the policy lets through (root, groups
 * kneewrap and kneewrap-clinic) may read, run sessions and add diary entries and runs; what
 * loosens or rewrites a patient's therapy (injuries, prescriptions, the profile, alerts,
 * adoption, removal) needs root or the group [daemon] clinic_group (kneewrap-clinic).
 */
static int need_clinic(Manager *m, sd_bus_message *msg, const char *method, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *c = NULL;
        const gid_t *gids = NULL;
        struct group grp, *g = NULL;
        char buf[1024];
        uid_t uid;
        gid_t gid;
        int r, n;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
                                      SD_BUS_CREDS_AUGMENT, &c);
        if (r >= 0)
                r = sd_bus_creds_get_euid(c, &uid);
        if (r < 0)
                return sd_bus_error_setf(error, BUS_API_ERROR_ACCESS_DENIED,
                                         "%s: the caller's credentials cannot be read", method);
        if (uid == 0)
                return 0;
        if (getgrnam_r(m->config.clinic_group, &grp, buf, sizeof buf, &g) == 0 && g) {
                if (sd_bus_creds_get_egid(c, &gid) >= 0 && gid == g->gr_gid)
                        return 0;
                n = sd_bus_creds_get_supplementary_gids(c, &gids);
                for (int i = 0; i < n; i++)
                        if (gids[i] == g->gr_gid)
                                return 0;
        }
        log_notice("D-Bus: %s refused for uid %u: it needs root or group %s.", method, (unsigned) uid,
                   m->config.clinic_group);
        return sd_bus_error_setf(error, BUS_API_ERROR_ACCESS_DENIED, "%s needs root or group %s", method,
                                 m->config.clinic_group);
}

/* The caller's uid for the change history, -1 when the bus does not say. */
static int64_t sender_uid(sd_bus_message *msg) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *c = NULL;
        uid_t uid;

        if (sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID | SD_BUS_CREDS_AUGMENT, &c) < 0 ||
            sd_bus_creds_get_euid(c, &uid) < 0)
                return -1;
        return uid;
}

/* A method of the clinic's: its handler runs only for root and the clinic group. */
#define CLINIC_METHOD(handler, name)                                                                    \
        static int clinic_##handler(sd_bus_message *msg, void *userdata, sd_bus_error *error) {          \
                int _r = need_clinic(userdata, msg, name, error);                                      \
                return _r < 0 ? _r : handler(msg, userdata, error);                                    \
        }

static int method_start_session(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *wrap, *mode;
        int r;

        r = sd_bus_message_read(msg, "ss", &wrap, &mode);
        if (r < 0)
                return r;
        return start_session(msg, userdata, wrap, mode, SOURCE_DBUS, error);
}

static int method_start_session_as(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *wrap, *mode, *source;
        RequestSource src = SOURCE_DBUS;
        int r;

        r = sd_bus_message_read(msg, "sss", &wrap, &mode, &source);
        if (r < 0)
                return r;
        r = source_arg(source, &src, error);
        if (r < 0)
                return r;
        return start_session(msg, userdata, wrap, mode, src, error);
}

static int stop_session(sd_bus_message *msg, Manager *m, const char *wrap_raw, RequestSource source,
                        sd_bus_error *error) {
        const char *why = NULL;
        char wrap[WRAP_ID_MAX];
        int r;

        r = wrap_arg(wrap_raw, wrap, error);
        if (r < 0)
                return r;
        r = door_stop(m, wrap, source, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_stop_session(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *wrap;
        int r;

        r = sd_bus_message_read(msg, "s", &wrap);
        if (r < 0)
                return r;
        return stop_session(msg, userdata, wrap, SOURCE_DBUS, error);
}

static int method_stop_session_as(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *wrap, *source;
        RequestSource src = SOURCE_DBUS;
        int r;

        r = sd_bus_message_read(msg, "ss", &wrap, &source);
        if (r < 0)
                return r;
        r = source_arg(source, &src, error);
        if (r < 0)
                return r;
        return stop_session(msg, userdata, wrap, src, error);
}

/* ---- wraps ---- */

static int method_open_adoption(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const DoorActor who = { .source = SOURCE_DBUS, .uid = sender_uid(msg) };
        const char *why = NULL;
        uint32_t seconds;
        int r;

        r = sd_bus_message_read(msg, "u", &seconds);
        if (r < 0)
                return r;
        r = door_open_adoption(m, &who, seconds, &why);
        if (r < 0)
                return one_door_error(m, error, r, NULL, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_remove_wrap(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const DoorActor who = { .source = SOURCE_DBUS, .uid = sender_uid(msg) };
        const char *arg, *why = NULL;
        char wrap[WRAP_ID_MAX];
        int r;

        r = sd_bus_message_read(msg, "s", &arg);
        if (r < 0)
                return r;
        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        r = door_remove_wrap(m, &who, wrap, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_list_wraps(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssbsu)");
        if (r < 0)
                return r;
        for (Wrap *w = m->wraps; w; w = wrap_next(w)) {
                const WrapLive *l = wrap_get_live(w);
                r = sd_bus_message_append(reply, "(sssbsu)", wrap_get_id(w), wrap_get_address(w), wrap_get_name(w),
                                          l->connected, therapy_mode_to_string(l->mode),
                                          l->mode != THERAPY_NONE ? l->remaining_s : 0);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- runs, the patient profile, alerts, compliance ---- */

static int method_record_run(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *arg, *source, *why = NULL;
        RunRecord run = { .source = SOURCE_DBUS };
        int64_t ended_at, id = 0;
        uint32_t minutes, meters;
        int r;

        r = sd_bus_message_read(msg, "sxuus", &arg, &ended_at, &minutes, &meters, &source);
        if (r < 0)
                return r;
        r = wrap_arg(arg, run.wrap, error);
        if (r < 0)
                return r;
        if (*source) {
                r = source_arg(source, &run.source, error);
                if (r < 0)
                        return r;
        }
        run.ended_at = ended_at;
        run.minutes = minutes;
        run.meters = meters;
        r = door_record_run(m, &run, &id, &why);
        if (r < 0)
                return one_door_error(m, error, r, run.wrap, why);
        return sd_bus_reply_method_return(msg, "x", id);
}

static int method_set_profile(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *arg, *label, *knee, *ref, *why = NULL;
        PatientProfile p = { .knee = KNEE_UNSET };
        int r, k;

        r = sd_bus_message_read(msg, "ssss", &arg, &label, &knee, &ref);
        if (r < 0)
                return r;
        r = wrap_arg(arg, p.wrap, error);
        if (r < 0)
                return r;
        if (*knee) {
                k = knee_from_string(knee);
                if (k < 0)
                        return sd_bus_error_set(error, BUS_API_ERROR_INVALID_ARGS, "the knee is \"left\", \"right\" or \"\"");
                p.knee = (Knee) k;
        }
        if (strlen(label) >= sizeof p.label || strlen(ref) >= sizeof p.clinic_ref)
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS,
                                         "a label or clinic reference is at most %d bytes", PROFILE_TEXT_MAX - 1);
        snprintf(p.label, sizeof p.label, "%s", label);
        snprintf(p.clinic_ref, sizeof p.clinic_ref, "%s", ref);
        r = door_set_profile(m, &p, &why);
        if (r < 0)
                return one_door_error(m, error, r, p.wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_acknowledge_alert(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *why = NULL;
        AlertRecord a;
        int64_t id;
        int r;

        r = sd_bus_message_read(msg, "x", &id);
        if (r < 0)
                return r;
        r = door_ack_alert(m, id, &a, &why);
        if (r == -ENOENT)
                return sd_bus_error_set(error, BUS_API_ERROR_NO_SUCH_ALERT, why);
        if (r == -EALREADY)
                return sd_bus_error_set(error, BUS_API_ERROR_ALREADY_ACKNOWLEDGED, why);
        if (r < 0)
                return one_door_error(m, error, r, NULL, why);
        return sd_bus_reply_method_return(msg, "ss", a.wrap, alert_kind_to_string(a.kind));
}

static int method_get_compliance(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        const char *arg, *since_date, *until_date;
        char wrap[WRAP_ID_MAX], from[CLOCK_ISO_MAX], to[CLOCK_ISO_MAX];
        int64_t since, until;
        Compliance c;
        int r;

        r = sd_bus_message_read(msg, "sss", &arg, &since_date, &until_date);
        if (r < 0)
                return r;
        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        if (clock_local_period(since_date, until_date, manager_now(m), 7, &since, &until) < 0)
                return sd_bus_error_set(error, BUS_API_ERROR_INVALID_ARGS,
                                        "since and until are local dates, YYYY-MM-DD (or \"\"), since not after until");
        if (!m->store)
                return one_door_error(m, error, -EAGAIN, wrap, "the store is unavailable");
        if (!wrap_exists(m, wrap))
                return one_door_error(m, error, -ENOENT, wrap, NULL);
        r = store_compliance(m->store, wrap, since, until, &c);
        if (r < 0)
                return one_door_error(m, error, r, wrap, "cannot compute compliance");

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "a{sv}", 11,
                                  "since", "s", clock_format_iso(since, from),
                                  "until", "s", clock_format_iso(until, to),
                                  "cold_completed", "u", c.cold_completed,
                                  "cold_incomplete", "u", c.cold_incomplete,
                                  "cold_refused", "u", c.cold_refused,
                                  "heat_refused", "u", c.heat_refused,
                                  "heat_refused_first_week", "u", c.heat_refused_first_week,
                                  "minutes", "u", c.minutes,
                                  "days_with_cold", "u", c.days_with_cold,
                                  "runs", "u", c.runs,
                                  "runs_followed", "u", c.runs_followed);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

void bus_api_alert(BusApi *api, const AlertRecord *a) {
        int r;

        if (!api || !a || !api->m->bus)
                return;
        if (a->acked_at > 0)
                r = sd_bus_emit_signal(api->m->bus, BUS_API_PATH, BUS_API_INTERFACE, "AlertAcknowledged", "sxx",
                                       a->wrap, a->id, a->acked_at);
        else
                r = sd_bus_emit_signal(api->m->bus, BUS_API_PATH, BUS_API_INTERFACE, "AlertRaised", "sxssxs",
                                       a->wrap, a->id, alert_kind_to_string(a->kind),
                                       alert_kind_severity(a->kind),
                                       a->at, a->text);
        if (r < 0)
                log_wrap_errno(LOG_WARNING, r, a->wrap, "Cannot emit the alert signal on D-Bus: %m");
}

/* ---- injuries, the diary, prescriptions ---- */

static int method_set_injury(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const DoorActor who = { .source = SOURCE_DBUS, .uid = sender_uid(msg) };
        const char *arg, *iso, *why = NULL;
        char wrap[WRAP_ID_MAX];
        int r;

        r = sd_bus_message_read(msg, "ss", &arg, &iso);
        if (r < 0)
                return r;
        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        r = door_set_injury(m, &who, wrap, *iso ? iso : NULL, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int diary_flag(const char *s, uint8_t *flags) {
        static const struct { const char *name; uint8_t bit; } map[] = {
                { "swelling", DIARY_SWELLING }, { "pop", DIARY_POP },
                { "giving_way", DIARY_GIVING_WAY }, { "catching", DIARY_CATCHING },
        };

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(s, map[i].name)) {
                        *flags |= map[i].bit;
                        return 0;
                }
        return -EINVAL;
}

static int method_add_diary(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        DiaryEntry e = { .where = WHERE_FRONT };
        const char *arg, *where, *flag, *why = NULL;
        char wrap[WRAP_ID_MAX];
        int r;

        r = sd_bus_message_read(msg, "sys", &arg, &e.score, &where);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(msg, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(msg, "s", &flag)) > 0)
                if (diary_flag(flag, &e.flags) < 0)
                        return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS,
                                                 "unknown flag \"%s\": swelling, pop, giving_way or catching", flag);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(msg);
        if (r < 0)
                return r;

        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        if (*where) {
                r = diary_where_from_string(where);
                if (r < 0)
                        return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS,
                                                 "unknown place \"%s\": front, inner, outer, back or below", where);
                e.where = (DiaryWhere) r;
        }
        e.at = manager_now(m);
        r = door_add_diary(m, wrap, &e, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

/* One a{sv} value as a number: any integer type, and for a temperature a double too. */
static int read_number(sd_bus_message *msg, const char *key, bool decimal, double *ret, sd_bus_error *error) {
        const char *contents = NULL;
        union { uint8_t y; int16_t n; uint16_t q; int32_t i; uint32_t u; int64_t x; uint64_t t; double d; } v;
        char type = 0;
        int r;

        r = sd_bus_message_peek_type(msg, &type, &contents);
        if (r < 0)
                return r;
        if (type != SD_BUS_TYPE_VARIANT || !contents || strlen(contents) != 1 ||
            !strchr(decimal ? "ynqiuxtd" : "ynqiuxt", contents[0]))
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS, "%s: must be %s", key,
                                         decimal ? "a number (d, or an integer type)" : "a whole number (an integer type)");
        r = sd_bus_message_enter_container(msg, SD_BUS_TYPE_VARIANT, contents);
        if (r < 0)
                return r;
        r = sd_bus_message_read_basic(msg, contents[0], &v);
        if (r < 0)
                return r;
        switch (contents[0]) {
        case 'y': *ret = v.y; break;
        case 'n': *ret = v.n; break;
        case 'q': *ret = v.q; break;
        case 'i': *ret = v.i; break;
        case 'u': *ret = v.u; break;
        case 'x': *ret = (double) v.x; break;
        case 't': *ret = (double) v.t; break;
        default:  *ret = v.d; break;
        }
        return sd_bus_message_exit_container(msg);
}

/* The configuration's key names, so one vocabulary serves the file and the API. A key's bit
 * in the mask is its RX_* bit (record.h), so the mask goes to the door as it is. */
enum { COLD_MIN, COLD_SET, HEAT_MIN, HEAT_SET, WAIT_DAYS, REST_MIN, _KEY_MAX };
_Static_assert(1u << COLD_MIN == RX_COLD_S && 1u << COLD_SET == RX_COLD_SETPOINT && 1u << HEAT_MIN == RX_HEAT_S &&
               1u << HEAT_SET == RX_HEAT_SETPOINT && 1u << WAIT_DAYS == RX_HEAT_WAIT_S &&
               1u << REST_MIN == RX_COLD_REST_S, "prescription keys follow the RX_* bits");
static const char *const prescription_keys[_KEY_MAX] = {
        "cold_minutes", "cold_setpoint_c", "heat_minutes", "heat_setpoint_c", "heat_wait_days",
        "cold_rest_minutes",
};

typedef struct {
        double val[_KEY_MAX];
        unsigned mask;
        sd_bus_error *error;
} PrescriptionArgs;

static int prescription_entry(sd_bus_message *msg, const char *key, _unused_ const char *contents, void *userdata) {
        PrescriptionArgs *a = userdata;
        sd_bus_error *error = a->error;
        size_t k;
        int r;

        for (k = 0; k < _KEY_MAX; k++)
                if (streq(key, prescription_keys[k]))
                        break;
        if (k == _KEY_MAX)
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS, "unknown key \"%s\": cold_minutes, "
                                         "cold_setpoint_c, heat_minutes, heat_setpoint_c, heat_wait_days or "
                                         "cold_rest_minutes", key);
        if (a->mask & (1u << k))
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS, "%s given twice", key);
        r = read_number(msg, key, k == COLD_SET || k == HEAT_SET, &a->val[k], error);
        if (r < 0)
                return r;
        if (!isfinite(a->val[k]) || a->val[k] < (k == COLD_SET || k == HEAT_SET ? -1000 : 0) ||
            a->val[k] > RX_NUMBER_MAX)
                return sd_bus_error_setf(error, BUS_API_ERROR_INVALID_ARGS, "%s: %g is not a sensible value",
                                         key, a->val[k]);
        a->mask |= 1u << k;
        return 1;
}

static int method_set_prescription(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const DoorActor who = { .source = SOURCE_DBUS, .uid = sender_uid(msg) };
        PrescriptionArgs a = { .error = error };
        RulesPrescription rx = { 0 };
        const char *arg, *why = NULL;
        char wrap[WRAP_ID_MAX];
        double *val = a.val;
        unsigned mask;
        int r;

        r = sd_bus_message_read(msg, "s", &arg);
        if (r < 0)
                return r;
        r = bus_message_read_dict(msg, prescription_entry, &a);
        if (r < 0)
                return r;
        mask = a.mask;

        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        /* In the store's units; what is not given stays as it is in force (the door merges). */
        if (mask & (1u << COLD_MIN))
                rx.cold_s = (uint32_t) val[COLD_MIN] * 60;
        if (mask & (1u << COLD_SET))
                rx.cold_setpoint = (int32_t) lround(val[COLD_SET] * 100);
        if (mask & (1u << HEAT_MIN))
                rx.heat_s = (uint32_t) val[HEAT_MIN] * 60;
        if (mask & (1u << HEAT_SET))
                rx.heat_setpoint = (int32_t) lround(val[HEAT_SET] * 100);
        if (mask & (1u << WAIT_DAYS)) {
                /* Saturate, never wrap: 49718 days must not become 7.7 (the rules refuse it). */
                uint64_t wait = (uint64_t) val[WAIT_DAYS] * (uint64_t) RULES_DAY_S;
                rx.heat_wait_s = wait > UINT32_MAX ? UINT32_MAX : (uint32_t) wait;
        }
        if (mask & (1u << REST_MIN))
                rx.cold_rest_s = (uint32_t) val[REST_MIN] * 60;

        r = door_set_prescription(m, &who, wrap, &rx, mask, NULL, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_clear_prescription(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const DoorActor who = { .source = SOURCE_DBUS, .uid = sender_uid(msg) };
        const char *arg, *why = NULL;
        char wrap[WRAP_ID_MAX];
        int r;

        r = sd_bus_message_read(msg, "s", &arg);
        if (r < 0)
                return r;
        r = wrap_arg(arg, wrap, error);
        if (r < 0)
                return r;
        r = door_clear_prescription(m, &who, wrap, &why);
        if (r < 0)
                return one_door_error(m, error, r, wrap, why);
        return sd_bus_reply_method_return(msg, NULL);
}

/* ---- properties ---- */

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        if (streq(property, "Version"))
                return sd_bus_message_append(reply, "s", KW_VERSION);
        if (streq(property, "Status"))
                return sd_bus_message_append(reply, "s", m->status ? m->status : "");
        if (streq(property, "AdoptionOpen"))
                return sd_bus_message_append(reply, "b", adoption_open(m));
        if (streq(property, "StoreAvailable"))
                return sd_bus_message_append(reply, "b", m->store != NULL);
        if (streq(property, "MqttConnected"))
                return sd_bus_message_append(reply, "b", mqtt_connected(m->mqtt));
        if (streq(property, "ClockSynchronized"))
                return sd_bus_message_append(reply, "b", m->clock_sync > 0);
        if (streq(property, "ClockTrusted"))
                return sd_bus_message_append(reply, "b", manager_clock_trusted(m));
        if (streq(property, "Wraps")) {
                int r = sd_bus_message_open_container(reply, 'a', "s");
                for (Wrap *w = m->wraps; w && r >= 0; w = wrap_next(w))
                        r = sd_bus_message_append(reply, "s", wrap_get_id(w));
                return r < 0 ? r : sd_bus_message_close_container(reply);
        }
        return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property);
}

/*
 * Every method is UNPRIVILEGED to sd-bus: the bus policy (org.kneewrap1.conf) already let
 * only root, the user kneewrap and the group kneewrap through. sd-bus's own check would
 * add CAP_SYS_ADMIN-or-same-uid, shutting out the very group the policy lets in, and two
 * gates that disagree are worse than one that is clear.
 */
CLINIC_METHOD(method_open_adoption, "OpenAdoption")
CLINIC_METHOD(method_remove_wrap, "RemoveWrap")
CLINIC_METHOD(method_set_injury, "SetInjury")
CLINIC_METHOD(method_set_prescription, "SetPrescription")
CLINIC_METHOD(method_clear_prescription, "ClearPrescription")
CLINIC_METHOD(method_set_profile, "SetProfile")
CLINIC_METHOD(method_acknowledge_alert, "AcknowledgeAlert")

#define M SD_BUS_VTABLE_UNPRIVILEGED
#define P SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE
static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Status", "s", property_get, 0, P),
        SD_BUS_PROPERTY("AdoptionOpen", "b", property_get, 0, P),
        SD_BUS_PROPERTY("Wraps", "as", property_get, 0, P),
        SD_BUS_PROPERTY("StoreAvailable", "b", property_get, 0, P),
        SD_BUS_PROPERTY("MqttConnected", "b", property_get, 0, P),
        SD_BUS_PROPERTY("ClockSynchronized", "b", property_get, 0, P),
        SD_BUS_PROPERTY("ClockTrusted", "b", property_get, 0, P),
        SD_BUS_METHOD_WITH_NAMES("StartSession", "ss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(mode),
                                 "sssqs", SD_BUS_PARAM(session_id) SD_BUS_PARAM(outcome) SD_BUS_PARAM(refusal)
                                 SD_BUS_PARAM(minutes_left) SD_BUS_PARAM(message),
                                 method_start_session, M),
        SD_BUS_METHOD_WITH_NAMES("StartSessionAs", "sss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(mode) SD_BUS_PARAM(source),
                                 "sssqs", SD_BUS_PARAM(session_id) SD_BUS_PARAM(outcome) SD_BUS_PARAM(refusal)
                                 SD_BUS_PARAM(minutes_left) SD_BUS_PARAM(message),
                                 method_start_session_as, M),
        SD_BUS_METHOD_WITH_NAMES("StopSession", "s", SD_BUS_PARAM(wrap), "", , method_stop_session, M),
        SD_BUS_METHOD_WITH_NAMES("StopSessionAs", "ss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(source), "", ,
                                 method_stop_session_as, M),
        SD_BUS_METHOD_WITH_NAMES("OpenAdoption", "u", SD_BUS_PARAM(seconds), "", , clinic_method_open_adoption, M),
        SD_BUS_METHOD_WITH_NAMES("RemoveWrap", "s", SD_BUS_PARAM(wrap), "", , clinic_method_remove_wrap, M),
        SD_BUS_METHOD_WITH_NAMES("ListWraps", "", , "a(sssbsu)", SD_BUS_PARAM(wraps), method_list_wraps, M),
        SD_BUS_METHOD_WITH_NAMES("SetInjury", "ss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(iso), "", , clinic_method_set_injury, M),
        SD_BUS_METHOD_WITH_NAMES("AddDiary", "sysas",
                                 SD_BUS_PARAM(wrap) SD_BUS_PARAM(score) SD_BUS_PARAM(where) SD_BUS_PARAM(flags),
                                 "", , method_add_diary, M),
        SD_BUS_METHOD_WITH_NAMES("SetPrescription", "sa{sv}", SD_BUS_PARAM(wrap) SD_BUS_PARAM(prescription),
                                 "", , clinic_method_set_prescription, M),
        SD_BUS_METHOD_WITH_NAMES("ClearPrescription", "s", SD_BUS_PARAM(wrap), "", , clinic_method_clear_prescription, M),
        SD_BUS_METHOD_WITH_NAMES("RecordRun", "sxuus",
                                 SD_BUS_PARAM(wrap) SD_BUS_PARAM(ended_at) SD_BUS_PARAM(minutes) SD_BUS_PARAM(meters)
                                 SD_BUS_PARAM(source),
                                 "x", SD_BUS_PARAM(id), method_record_run, M),
        SD_BUS_METHOD_WITH_NAMES("SetProfile", "ssss",
                                 SD_BUS_PARAM(wrap) SD_BUS_PARAM(label) SD_BUS_PARAM(knee) SD_BUS_PARAM(clinic_ref),
                                 "", , clinic_method_set_profile, M),
        SD_BUS_METHOD_WITH_NAMES("AcknowledgeAlert", "x", SD_BUS_PARAM(id),
                                 "ss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(kind), clinic_method_acknowledge_alert, M),
        SD_BUS_METHOD_WITH_NAMES("GetCompliance", "sss", SD_BUS_PARAM(wrap) SD_BUS_PARAM(since) SD_BUS_PARAM(until),
                                 "a{sv}", SD_BUS_PARAM(compliance), method_get_compliance, M),
        SD_BUS_SIGNAL_WITH_NAMES("AlertRaised", "sxssxs",
                                 SD_BUS_PARAM(wrap) SD_BUS_PARAM(id) SD_BUS_PARAM(kind) SD_BUS_PARAM(severity)
                                 SD_BUS_PARAM(at) SD_BUS_PARAM(text), 0),
        SD_BUS_SIGNAL_WITH_NAMES("AlertAcknowledged", "sxx", SD_BUS_PARAM(wrap) SD_BUS_PARAM(id) SD_BUS_PARAM(acked_at), 0),
        SD_BUS_VTABLE_END,
};
#undef M
#undef P

/* ---- lifetime ---- */

int bus_api_new(Manager *m, BusApi **ret) {
        BusApi *a;
        int r;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->m = m;
        r = sd_bus_add_object_vtable(m->bus, &a->slot, BUS_API_PATH, BUS_API_INTERFACE, manager_vtable, m);
        if (r < 0) {
                bus_api_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

BusApi *bus_api_free(BusApi *a) {
        if (!a)
                return NULL;
        a->slot = sd_bus_slot_unref(a->slot);
        a->adoption_timer = sd_event_source_disable_unref(a->adoption_timer);
        free(a->wraps);
        free(a->status);
        free(a);
        return NULL;
}
