/* config: kneewrapd.conf, read with inih, every value checked against its bounds. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rules.h"

#define CONFIG_MAX_ALLOW 64

typedef enum MqttProtocol {
        MQTT_PROTOCOL_V311,
        MQTT_PROTOCOL_V5,
} MqttProtocol;

/* [mqtt] commands: what MQTT may do. */
enum {
        MQTT_ALLOW_SESSIONS     = 1 << 0,   /* start, stop */
        MQTT_ALLOW_DIARY        = 1 << 1,   /* pain diary entries */
        MQTT_ALLOW_RUNS         = 1 << 2,   /* runs (issue 10) */
        MQTT_ALLOW_INJURY       = 1 << 3,   /* recording an injury: only tightens the rules */
        MQTT_ALLOW_RESOLVE      = 1 << 4,   /* resolving an injury: heat may follow at once */
        MQTT_ALLOW_PRESCRIPTION = 1 << 5,   /* a clinic's prescription */
        MQTT_ALLOW_ADOPTION     = 1 << 6,   /* opening adoption, removing wraps */
        MQTT_ALLOW_ALERTS       = 1 << 7,   /* acknowledging alerts: a clinic's call, not by default */
        MQTT_ALLOW_DEFAULT      = MQTT_ALLOW_SESSIONS | MQTT_ALLOW_DIARY | MQTT_ALLOW_RUNS | MQTT_ALLOW_INJURY,
};

/* "sessions", "diary", ... for one MQTT_ALLOW_* bit; NULL for anything else. */
const char *mqtt_allow_to_string(unsigned bit);

typedef struct Config {
        /* [daemon] */
        int log_level;                    /* syslog level, default LOG_INFO */
        char *clinic_group;               /* D-Bus: who besides root may change injuries, prescriptions,
                                           * adoption (default "kneewrap-clinic") */
        bool clock_trusted;               /* R10: trust the wall clock unsynchronised (a battery clock); default no */

        /* [bluetooth] */
        char *adapter;                    /* "hciN" or an address; NULL: the first powered one */
        bool auto_adopt;                  /* default no */
        char allow[CONFIG_MAX_ALLOW][18]; /* normalised addresses */
        unsigned n_allow;
        bool power_on;                    /* power the adapter on when it is off; default yes */

        /* [mqtt] */
        char *mqtt_host;                  /* NULL: MQTT disabled */
        uint16_t mqtt_port;               /* 1883, or 8883 with TLS when not set */
        char *base_topic;                 /* "kneewrap" */
        char *discovery_prefix;           /* "homeassistant" */
        char *client_id;                  /* NULL: "kneewrap-<hostname>" */
        char *username;
        char *password_file;              /* or a systemd credential named "mqtt-password" */
        char *tls_ca_file;
        char *tls_ca_dir;                 /* a hashed CA directory, e.g. the system's /etc/ssl/certs */
        char *tls_cert_file;
        char *tls_key_file;
        uint16_t keepalive;               /* seconds, 60 */
        MqttProtocol protocol;            /* 3.1.1 unless "5" */
        unsigned mqtt_commands;           /* MQTT_ALLOW_*, MQTT_ALLOW_DEFAULT */

        /* [therapy]: the defaults a clinic's per-wrap prescription may override */
        RulesPrescription therapy;

        /* [store] */
        char *store_path;                 /* /var/lib/kneewrap/kneewrap.db */
        char *uplink_state_path;          /* the clinic uplink's cursor, read for status only */
} Config;

/* Fills the built-in defaults. */
void config_init(Config *c);
void config_done(Config *c);

/*
 * Loads `path` over the defaults. Every problem is printed to `errors` (may be NULL) as
 * "file:line: [section] key: why", one line each, and counted. Returns 0 when the file
 * is valid, -EINVAL when it has errors (the Config is then left at the defaults and must
 * not be used), or -errno when it cannot be read.
 */
int config_load(Config *c, const char *path, FILE *errors);

/* For every configuration parser (kneewrapd.conf, the uplink's uplink.conf): *dst becomes a copy
 * of value (-ENOMEM); config_set_path() takes only an absolute path (-EINVAL, *why says so). */
int config_set_string(char **dst, const char *value);
int config_set_path(char **dst, const char *value, const char **why);
/* The same, from an open stream (left open); `path` names it in the errors. */
int config_load_stream(Config *c, FILE *f, const char *path, FILE *errors);
