/* commands: the one parser of MQTT commands (<base>/<wrap>/set, <base>/bridge/request/<name>). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "record.h"
#include "rules.h"

#define COMMAND_ERROR_MAX    160
#define COMMAND_TRANSACTION_MAX 64
#define COMMAND_TEXT_MAX     40
#define COMMAND_NAME_MAX     64          /* a bridge request's name or a wrap id, with its NUL */
#define COMMAND_PAYLOAD_MAX  (64 * 1024) /* larger inbound payloads are dropped unparsed */
#define COMMAND_CLIENT_MAX   128         /* a claimed client id, with its NUL */
#define COMMAND_CLIENT_PROPERTY "client" /* the MQTT 5 user property that carries it */

/* What an inbound topic is for. */
typedef enum TopicKind {
        TOPIC_IGNORED,           /* not ours, or not a topic we act on */
        TOPIC_HA_STATUS,         /* <prefix>/status: Home Assistant's birth and will */
        TOPIC_BRIDGE_REQUEST,    /* <base>/bridge/request/<name> */
        TOPIC_WRAP_SET,          /* <base>/<wrap>/set */
} TopicKind;

/*
 * Routes an inbound topic. For a bridge request, name is <name>; for <wrap>/set, the wrap
 * id. Names are never empty, never hold '/', '+' or '#' (they go into the response's
 * topic), and fit COMMAND_NAME_MAX (a wrap id, WRAP_ID_MAX); anything else is ignored.
 */
TopicKind command_route(const char *base, const char *prefix, const char *topic,
                        char name[static COMMAND_NAME_MAX]);

typedef enum CommandType {
        COMMAND_START,           /* <wrap>/set {"action":"start","mode":"cold"} */
        COMMAND_STOP,            /* <wrap>/set {"action":"stop"} */
        COMMAND_INJURY,          /* <wrap>/set {"injury":...}, bridge/request/injury */
        COMMAND_DIARY,           /* <wrap>/set {"pain":{...}}, bridge/request/diary */
        COMMAND_ADOPT,           /* bridge/request/adopt {"time":120} */
        COMMAND_REMOVE,          /* bridge/request/remove {"wrap":"wrap_..."} */
        COMMAND_PRESCRIPTION,    /* bridge/request/prescription {"wrap":..., "cold_s":...} */
        COMMAND_RUN,             /* <wrap>/set {"run":{"at":...,"minutes":40,"km":8.2}} ({} : just now) */
        COMMAND_ACK_ALERT,       /* <wrap>/set {"ack_alert":17} */
} CommandType;

typedef struct Command {
        CommandType type;
        char wrap[32];                           /* bridge requests name the wrap; "" for <wrap>/set */
        bool has_transaction;
        char transaction[COMMAND_TRANSACTION_MAX]; /* echoed, as text, in the response */
        bool transaction_is_number;

        TherapyMode mode;                        /* START */

        /* INJURY: "" = resolved (null or ""); "today" is turned into a date by the caller */
        char injury[COMMAND_TEXT_MAX];

        DiaryEntry diary;                        /* DIARY; .at = 0 unless "at" was given */

        unsigned adopt_seconds;                  /* ADOPT: 0 closes adoption */

        RulesPrescription rx;                    /* PRESCRIPTION: the fields in rx_set (RX_*) */
        unsigned rx_set;

        int64_t run_at;                          /* RUN: when it ended, 0 = now */
        uint32_t run_minutes, run_meters;        /* RUN: 0 = not given */

        int64_t alert_id;                        /* ACK_ALERT */

        /* Where it came from, as far as MQTT tells a subscriber (filled by mqtt.c, not by
         * command_parse): the topic, and the MQTT 5 user property "client" the publisher set,
         * a claim nobody verified ("" when none; never with MQTT 3.1.1). */
        char topic[256];
        char claimed_client[COMMAND_CLIENT_MAX];
} Command;

/*
 * Parses a payload of n bytes (not NUL-terminated). `request` is NULL for <wrap>/set, or
 * the <name> of bridge/request/<name>. Returns 0, or -EINVAL with a sentence for the asker
 * in `error` (and the transaction, when one could be read, in ret->transaction). Never
 * reads past n; unknown keys, wrong types and out-of-range values are errors.
 */
int command_parse(const char *request, const char *payload, size_t n, Command *ret,
                  char error[static COMMAND_ERROR_MAX]);

/* The one MQTT_ALLOW_* bit of [mqtt] commands that a parsed command needs. */
unsigned command_needs(const Command *c);

/* The response JSON {"status":"ok"|"error","data":...,"error":...,"transaction":...}.
 * data_json may be NULL (then {}), error NULL for "ok". Returns 0 or -ENOMEM. */
int command_response(const Command *c, const char *data_json, const char *error, char **ret_json);
