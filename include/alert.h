/* alert: raising an alert: one record in the store, MQTT (retained), a D-Bus signal, the journal. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "manager.h"
#include "store.h"

/*
 * Every alert the daemon raises (R8, R9, a safety stop, a low battery, heat asked for in the
 * week after an injury) goes through alert_raise(), or, where the alert must be committed
 * with another fact (R9 with its diary entry), through alert_msg_build() inside that
 * transaction and alert_announce() after it. The record is stored first; the MQTT message
 * is in the outbox of the same transaction.
 */

/* What alert_msg_build() needs: the configuration (topics). */
typedef struct AlertMsgCtx {
        const Config *config;
} AlertMsgCtx;

/* An AlertMsgFn (store.h) for userdata = AlertMsgCtx *. */
int alert_msg_build(const AlertRecord *a, bool latest, void *userdata, OutboxMsg *ret);

/* After the alert was committed: the journal, the D-Bus signal, the outbox sent. */
void alert_announce(Manager *m, const AlertRecord *a);

/* Raises an alert; text is a sentence for people. Returns 0 or a store error. */
int alert_raise(Manager *m, const char *wrap, AlertKind kind, int64_t at, const char *text,
                const char *session_id);
