/* alert: raising an alert: one record in the store, MQTT (retained), a D-Bus signal, the journal. */
#include <errno.h>
#include <stdio.h>
#include <syslog.h>

#include "alert.h"
#include "bus-api.h"
#include "log.h"
#include "manager.h"
#include "mqtt.h"
#include "payload.h"
#include "store.h"
#include "util.h"

int alert_msg_build(const AlertRecord *a, bool latest, void *userdata, OutboxMsg *ret) {
        const AlertMsgCtx *ctx = userdata;

        return payload_alert_msg(ctx->config, a, latest, ret);
}

/* The journal's priority: an urgent alert (alert_kind_severity) is LOG_ALERT for R9, LOG_CRIT for R5. */
static int alert_priority(AlertKind kind) {
        if (streq(alert_kind_severity(kind), "warning"))
                return LOG_WARNING;
        return kind == ALERT_RED_FLAG ? LOG_ALERT : LOG_CRIT;
}

void alert_announce(Manager *m, const AlertRecord *a) {
        log_wrap(alert_priority(a->kind), a->wrap, "Alert %lld (%s): %s", (long long) a->id,
                 alert_kind_to_string(a->kind), a->text);
        bus_api_alert(m->api, a);
        mqtt_kick(m->mqtt);
}

int alert_raise(Manager *m, const char *wrap, AlertKind kind, int64_t at, const char *text,
                const char *session_id) {
        AlertMsgCtx ctx = { .config = &m->config };
        AlertRecord a = { .kind = kind, .at = at };
        int r;

        if (!m->store)
                return -EAGAIN;
        snprintf(a.wrap, sizeof a.wrap, "%s", wrap);
        snprintf(a.text, sizeof a.text, "%s", text ? text : "");
        snprintf(a.session_id, sizeof a.session_id, "%s", session_id ? session_id : "");
        r = store_alert_add(m->store, &a, m->config.mqtt_host ? alert_msg_build : NULL, &ctx);
        if (r < 0)
                return r;
        alert_announce(m, &a);
        return 0;
}
