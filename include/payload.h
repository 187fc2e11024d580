/* payload: every MQTT JSON payload, built and parsed here only (jansson). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "config.h"
#include "record.h"
#include "rules.h"
#include "store.h"

/*
 * Builders return 0 and a malloc'd string (or OutboxMsg fields), or -ENOMEM. They read no
 * clock: times come in as arguments and are written as ISO 8601 with the local offset.
 */

/* A session record with exactly the fields of therapy-rules.md. */
int payload_session(const SessionRecord *rec, char **ret_json);
/* The same as a jansson object (a new reference), or NULL without memory. */
json_t *payload_session_json(const SessionRecord *rec);
/* Compliance figures (store.h), as MQTT, D-Bus callers and the reports name them. */
json_t *payload_compliance_json(const Compliance *c);

/* The outbox message for a finished session: <base>/<wrap>/session, QoS 1, not retained. */
int payload_session_msg(const Config *c, const SessionRecord *rec, OutboxMsg *ret);

/*
 * An alert record, raised or (acked_at set) acknowledged, for <base>/<wrap>/alert, QoS 1,
 * retained when `latest` (no newer alert of the wrap exists). event_type is the alert's kind,
 * or "acknowledged"; session_id the record's (null when it concerns no session).
 */
int payload_alert_msg(const Config *c, const AlertRecord *a, bool latest, OutboxMsg *ret);

/* Frees the strings of an OutboxMsg built here. */
void outbox_msg_done(OutboxMsg *m);
