/* kneewrapctl: the command-line tool: wraps, injuries, the pain diary, prescriptions, history. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "bus-api.h"
#include "clock.h"
#include "config.h"
#include "kw-build.h"
#include "log.h"
#include "payload.h"
#include "record.h"
#include "report.h"
#include "rules.h"
#include "store.h"
#include "uplink-state.h"
#include "util.h"

/*
 * Every change goes through the running daemon's D-Bus API (org.kneewrap1 on the system
 * bus), and so through its one door and the therapy rules, recorded as source "cli": the
 * daemon hears of it at once (an R9 red flag entered here is acted on now). Only history
 * (wraps, sessions, export, compliance, reports) is read from the store directly. This
 * program links neither libmosquitto nor the BLE client (a meson test checks, ldd and nm).
 */

typedef struct Ctl {
        const char *config_path;
        bool explicit_config;
        const char *db_path;
        Config config;
        Store *store;             /* for reading history, read-only; changes go through the daemon */
        char empty_dir[64];       /* an empty store's directory, while kneewrapd has made none yet */
} Ctl;

static void help(void) {
        printf("Usage: %s [--config FILE] [--db FILE] COMMAND ...\n"
               "\n"
               "Commands:\n"
               "  wraps                                 The adopted wraps\n"
               "  injury WRAP DATE|DATETIME|--resolved  Record an injury (heat waits, R2), or mark it resolved\n"
               "  diary WRAP SCORE [--where W] [--flags F,...]\n"
               "                                        Add a pain diary entry: SCORE 0-10;\n"
               "                                        W: front (default), inner, outer, back, below;\n"
               "                                        F: swelling, pop, giving_way, catching\n"
               "  prescribe WRAP [--cold-minutes N] [--cold-setpoint C] [--heat-minutes N]\n"
               "                 [--heat-setpoint C] [--heat-wait-days N] [--rest-minutes N]\n"
               "  prescribe WRAP --clear                A clinic's prescription, or back to the defaults\n"
               "  sessions [WRAP] [--since DATE] [--json]\n"
               "                                        Session history, refused requests included\n"
               "  export [WRAP] [--since DATE]          Session records as JSON lines\n"
               "  compliance WRAP [--days N | --since DATE] [--until DATE] [--json]\n"
               "                                        Cold sessions done, missed, refused; runs followed\n"
               "  diary WRAP [--since DATE] [--until DATE] [--json]\n"
               "  injuries WRAP [--json]                The injuries recorded\n"
               "  history [WRAP] [--json]               Who changed injuries, prescriptions, adoption\n"
               "  prescription WRAP [--json]            The prescription in force\n"
               "  runs WRAP [--since DATE] [--until DATE] [--json]\n"
               "                                        Runs, and whether cold followed within 60 min\n"
               "  alerts [WRAP] [--all] [--json]        Open alerts (--all: acknowledged ones too)\n"
               "  report WRAP [--since DATE] [--until DATE] --format csv|json|fhir|html\n"
               "         [--what sessions|runs|diary|alerts|history] [-o FILE]\n"
               "                                        A clinic's report of the period\n"
               "  uplink [--json]                       The clinic uplink: records pending, last success, last error\n"
               "\n"
               "Through the running daemon (D-Bus, org.kneewrap1):\n"
               "  status                                The gateway, and each wrap's link and session\n"
               "  start WRAP cold|heat                  Ask for a session; the therapy rules decide\n"
               "  stop WRAP                             Stop the running session\n"
               "  adopt [SECONDS]                       Adopt a wrap in pairing mode (default 120 s; 0 closes)\n"
               "  remove WRAP                           Forget a wrap; its history stays\n"
               "  run WRAP [--at TIME] [--minutes N] [--km X]\n"
               "                                        Record a run (default: it just ended)\n"
               "  profile WRAP [--label TEXT] [--knee left|right] [--clinic-ref TEXT] [--json]\n"
               "                                        Show or set the patient profile\n"
               "  alerts [WRAP] --ack ID                Acknowledge an alert\n"
               "\n"
               "Options:\n"
               "  -c --config FILE   The daemon's configuration (default %s)\n"
               "     --db FILE       The store (default: [store] path from the configuration)\n"
               "  -h --help          Show this help\n"
               "     --version       Show the version\n"
               "\n"
               "WRAP is a wrap's id (wrap_aabbccddeeff) or its Bluetooth address. See kneewrapctl(1).\n",
               program_invocation_short_name, KW_DEFAULT_CONFIG);
}

/* Prints "kneewrapctl: message"; %m is `error` (a positive or negative errno), or errno when
 * `error` is 0. Returns EXIT_FAILURE. */
static int vfail(int error, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static int vfail(int error, const char *fmt, va_list ap) {
        int e = error < 0 ? -error : error ? error : errno;

        fprintf(stderr, "%s: ", program_invocation_short_name);
        errno = e;
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        return EXIT_FAILURE;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vfail(0, fmt, ap);
        va_end(ap);
        return r;
}

static int fail_errno(int error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_errno(int error, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vfail(error, fmt, ap);
        va_end(ap);
        return r;
}

/* The daemon's store is its user's, mode 0600: as root, act as that user, so that no file
 * SQLite creates beside it (-wal, -shm) ends up owned by root and locks the daemon out. */
static int drop_to_store_owner(const char *db) {
        _cleanup_free_ char *copy = strdup(db);
        struct stat st;

        if (geteuid() != 0 || !copy)
                return 0;
        if (stat(db, &st) < 0 && stat(dirname(copy), &st) < 0)
                return 0;
        if (st.st_uid == 0)
                return 0;
        if (setgroups(0, NULL) < 0 || setgid(st.st_gid) < 0 || setuid(st.st_uid) < 0)
                return -errno;
        return 0;
}

static int ctl_open(Ctl *c) {
        _cleanup_free_ char *why = NULL;
        const char *db;
        int r;

        config_init(&c->config);
        if (c->explicit_config || access(c->config_path, F_OK) == 0) {
                r = config_load(&c->config, c->config_path, stderr);
                if (r == -EINVAL)
                        return -fail("%s has errors (above); fix them first.", c->config_path);
                if (r < 0)
                        return -fail_errno(r, "cannot read %s: %m", c->config_path);
        }
        db = c->db_path ? c->db_path : c->config.store_path;

        r = drop_to_store_owner(db);
        if (r < 0)
                return -fail_errno(r, "cannot switch to the owner of %s: %m", db);

        /* Read-only: every change goes through the daemon (D-Bus). A store that does not exist
         * yet (kneewrapd has never run) holds nothing: read an empty one in memory rather
         * than create the daemon's file. */
        r = store_open_readonly(db, &c->store, &why);
        if (r == -ENOENT) {
                char path[sizeof c->empty_dir + 16];

                free(why);
                why = NULL;
                snprintf(c->empty_dir, sizeof c->empty_dir, "/tmp/kneewrapctl.XXXXXX");
                if (!mkdtemp(c->empty_dir)) {
                        c->empty_dir[0] = '\0';
                        return -fail("cannot make a directory for an empty store: %m");
                }
                snprintf(path, sizeof path, "%s/empty.db", c->empty_dir);
                r = store_open_err(path, &c->store, &why);
        }
        if (r < 0)
                return why ? -fail("the store: %s", why) : -fail_errno(r, "cannot open the store %s: %m", db);
        return 0;
}

static void ctl_close(Ctl *c) {
        c->store = store_close(c->store);
        if (c->empty_dir[0]) {
                static const char *const files[] = { "empty.db", "empty.db-wal", "empty.db-shm" };
                char path[sizeof c->empty_dir + 16];

                for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                        snprintf(path, sizeof path, "%s/%s", c->empty_dir, files[i]);
                        (void) unlink(path);
                }
                (void) rmdir(c->empty_dir);
        }
        config_done(&c->config);
}

/* A wrap's id, from an id or an address. */
static const char *wrap_arg(const char *arg, char buf[static WRAP_ID_MAX]) {
        if (wrap_id_from_address(arg, buf) == 0)
                return buf;
        snprintf(buf, WRAP_ID_MAX, "%s", arg);
        return buf;
}

static int parse_uint(const char *s, int64_t max, int64_t *ret) {
        int64_t v;

        if (parse_int64(s, &v) < 0 || v < 0 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_since(const char *s, int64_t *ret) {
        bool date_only;
        int64_t at;

        if (clock_parse_iso(s, &at, &date_only) < 0)
                return -EINVAL;
        if (date_only)
                return clock_local_day_start(at - 1, 0, ret); /* at is the day's end: the start of that day */
        *ret = at;
        return 0;
}

/* ---- through the daemon's D-Bus API ---- */

static int bus_fail(const char *what, const sd_bus_error *e, int r) {
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                return fail("%s: kneewrapd is not running (nobody owns %s on the system bus)", what, BUS_API_NAME);
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED))
                return fail("%s: not allowed to talk to kneewrapd; run as root or as a member of the group kneewrap",
                            what);
        if (sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_METHOD) || sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return fail("%s: the running kneewrapd does not have this API; is it older than kneewrapctl?", what);
        if (sd_bus_error_has_name(e, BUS_API_ERROR_REFUSED))
                return fail("refused: %s", e->message ? e->message : "outside the therapy rules' bounds");
        if (sd_bus_error_is_set(e) && strncmp(e->name, "org.kneewrap1.Error.", 20) == 0)
                return fail("%s", e->message ? e->message : e->name);
        if (sd_bus_error_is_set(e))
                return fail("%s: %s", what, e->message ? e->message : e->name);
        return fail_errno(r, "%s: %m", what);
}

static int bus_open(sd_bus **ret) {
        int r;

        /* DBUS_SYSTEM_BUS_ADDRESS, when set, names the bus: tests and the demo use their own. */
        r = sd_bus_open_system(ret);
        if (r < 0)
                return -fail_errno(r, "cannot connect to the system bus: %m");
        return 0;
}

/* A method call to build; api_send() sends it. */
static int api_message(const char *what, const char *member, sd_bus **ret_bus, sd_bus_message **ret_msg) {
        int r;

        if (bus_open(ret_bus) < 0)
                return -EXIT_FAILURE;
        r = sd_bus_message_new_method_call(*ret_bus, ret_msg, BUS_API_NAME, BUS_API_PATH, BUS_API_INTERFACE, member);
        if (r < 0)
                return -fail_errno(r, "%s: cannot build the D-Bus call: %m", what);
        return 0;
}

static int api_send(const char *what, sd_bus *bus, sd_bus_message *msg, sd_bus_message **reply) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = sd_bus_call(bus, msg, 0, &e, reply);

        if (r < 0)
                return -bus_fail(what, &e, r);
        return 0;
}

static int api_call(const char *what, const char *member, sd_bus_message **reply, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        va_list ap;
        int r;

        r = api_message(what, member, &bus, &msg);
        if (r < 0)
                return r;
        if (types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(msg, types, ap);
                va_end(ap);
                if (r < 0)
                        return -fail_errno(r, "%s: cannot build the D-Bus call: %m", what);
        }
        return api_send(what, bus, msg, reply);
}

/* ---- commands ---- */

static int cmd_wraps(Ctl *c, int argc, char **argv) {
        _cleanup_free_ StoredWrap *w = NULL;
        size_t n = 0;
        int r;

        if (argc != 1)
                return fail("wraps takes no arguments");
        r = store_wrap_list(c->store, &w, &n);
        if (r < 0)
                return fail_errno(r, "cannot list the wraps: %m (%s)", store_errmsg(c->store));
        if (n == 0) {
                printf("No wraps adopted yet. Adopt one with the daemon running: kneewrapctl adopt\n");
                return EXIT_SUCCESS;
        }
        printf("%-18s %-17s %-24s %-25s %s\n", "WRAP", "ADDRESS", "NAME", "ADOPTED", "PATIENT");
        for (size_t i = 0; i < n; i++) {
                char iso[CLOCK_ISO_MAX];
                PatientProfile p;

                if (store_profile_get(c->store, w[i].wrap, &p) < 0)
                        p.label[0] = '\0';
                printf("%-18s %-17s %-24s %-25s %s%s%s\n", w[i].wrap, w[i].address, w[i].name[0] ? w[i].name : "-",
                       clock_format_iso(w[i].adopted_at, iso), p.label[0] ? p.label : "-",
                       knee_to_string(p.knee) ? ", knee: " : "", knee_to_string(p.knee) ? knee_to_string(p.knee) : "");
        }
        return EXIT_SUCCESS;
}

static int cmd_injury(Ctl *c, int argc, char **argv) {
        char id[WRAP_ID_MAX];
        const char *wrap;
        bool resolved;

        if (argc != 3)
                return fail("usage: injury WRAP DATE|DATETIME|--resolved");
        wrap = wrap_arg(argv[1], id);
        resolved = streq(argv[2], "--resolved");
        if (api_call("injury", "SetInjury", NULL, "ss", wrap, resolved ? "" : argv[2]) < 0)
                return EXIT_FAILURE;
        if (resolved)
                printf("%s: injury resolved; heat is allowed (R3).\n", wrap);
        else
                printf("%s: injury recorded (%s); heat waits for the prescribed days after it (R2).\n", wrap, argv[2]);
        return EXIT_SUCCESS;
}

static int parse_flags(const char *s, uint8_t *ret) {
        static const struct { const char *name; uint8_t bit; } map[] = {
                { "swelling", DIARY_SWELLING }, { "pop", DIARY_POP }, { "giving_way", DIARY_GIVING_WAY },
                { "giving-way", DIARY_GIVING_WAY }, { "catching", DIARY_CATCHING },
        };
        char copy[256], *save = NULL, *tok;
        uint8_t flags = 0;

        snprintf(copy, sizeof copy, "%s", s);
        for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(map); i++)
                        if (streq(tok, map[i].name))
                                break;
                if (i == ELEMENTSOF(map))
                        return fail("unknown flag \"%s\": swelling, pop, giving_way or catching", tok), -EINVAL;
                flags |= map[i].bit;
        }
        *ret = flags;
        return 0;
}

static int diary_list(Ctl *c, int argc, char **argv);

/* "diary WRAP SCORE ..." adds an entry; "diary WRAP [--since ...]" lists them. */
static bool diary_adds(int argc, char **argv) {
        for (int i = 2; i < argc; i++) {
                const char *prev = argv[i - 1];
                if (streq(prev, "--where") || streq(prev, "--flags") || streq(prev, "--since") ||
                    streq(prev, "--until") || streq(prev, "--days"))
                        continue;
                if (argv[i][0] != '-' && strspn(argv[i], "0123456789") == strlen(argv[i]))
                        return true;
        }
        return false;
}

static int cmd_diary(Ctl *c, int argc, char **argv) {
        static const struct option options[] = {
                { "where", required_argument, NULL, 'w' },
                { "flags", required_argument, NULL, 'f' },
                { 0 }
        };
        /* Bit i of DiaryEntry.flags, as the D-Bus API names it. */
        static const char *const flag_names[] = { "swelling", "pop", "giving_way", "catching" };
        DiaryEntry e = { .where = WHERE_FRONT };
        const char *flags[ELEMENTSOF(flag_names)] = { 0 };
        unsigned n_flags = 0;
        char id[WRAP_ID_MAX];
        const char *wrap;
        int64_t score;
        int o, r;

        if (!diary_adds(argc, argv))
                return diary_list(c, argc, argv);
        optind = 0; /* GNU getopt: start over, permuting again */
        while ((o = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (o) {
                case 'w':
                        r = diary_where_from_string(optarg);
                        if (r < 0)
                                return fail("unknown place \"%s\": front, inner, outer, back or below", optarg);
                        e.where = (DiaryWhere) r;
                        break;
                case 'f':
                        if (parse_flags(optarg, &e.flags) < 0)
                                return EXIT_FAILURE;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (argc - optind != 2)
                return fail("usage: diary WRAP SCORE [--where W] [--flags swelling,pop,giving_way,catching]");
        if (parse_uint(argv[optind + 1], 10, &score) < 0)
                return fail("the pain score must be a whole number from 0 to 10, not \"%s\"", argv[optind + 1]);
        e.score = (uint8_t) score;
        wrap = wrap_arg(argv[optind], id);
        /* The daemon stamps the entry with its own clock. */
        for (unsigned i = 0; i < ELEMENTSOF(flag_names); i++)
                if (e.flags & (1u << i))
                        flags[n_flags++] = flag_names[i];
        if (api_call("diary", "AddDiary", NULL, "sysas", wrap, e.score, diary_where_to_string(e.where),
                     n_flags, flags[0], flags[1], flags[2], flags[3]) < 0)
                return EXIT_FAILURE;
        printf("%s: diary entry recorded: pain %u/10, %s.\n", wrap, e.score, diary_where_to_string(e.where));
        if (rules_diary_alert(&e) != ALERT_NONE)
                printf("URGENT: sudden swelling after a pop. Have the knee examined and imaged now (R9).\n");
        return EXIT_SUCCESS;
}

static int cmd_prescribe(Ctl *c, int argc, char **argv) {
        enum { COLD_MIN = 0x100, COLD_SET, HEAT_MIN, HEAT_SET, WAIT_DAYS, REST_MIN, CLEAR };
        static const struct option options[] = {
                { "cold-minutes",   required_argument, NULL, COLD_MIN },
                { "cold-setpoint",  required_argument, NULL, COLD_SET },
                { "heat-minutes",   required_argument, NULL, HEAT_MIN },
                { "heat-setpoint",  required_argument, NULL, HEAT_SET },
                { "heat-wait-days", required_argument, NULL, WAIT_DAYS },
                { "rest-minutes",   required_argument, NULL, REST_MIN },
                { "clear",          no_argument,       NULL, CLEAR },
                { 0 }
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        RulesPrescription rx;
        char id[WRAP_ID_MAX];
        const char *wrap;
        bool clear = false, any = false, prescribed;
        int64_t v;
        int32_t t;
        int o, r;

        /* Options may come before or after WRAP. */
        const char *wrap_raw = NULL;
        RulesPrescription set = { 0 };
        unsigned mask = 0;

        optind = 0; /* GNU getopt: start over, permuting again */
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0) {
                if (o == 1) {
                        if (wrap_raw)
                                return fail("prescribe takes one WRAP");
                        wrap_raw = optarg;
                        continue;
                }
                if (o == CLEAR) {
                        clear = true;
                        continue;
                }
                any = true;
                switch (o) {
                case COLD_MIN: case HEAT_MIN: case WAIT_DAYS: case REST_MIN:
                        if (parse_uint(optarg, 100000, &v) < 0)
                                return fail("%s: \"%s\" is not a whole number", options[o - COLD_MIN].name, optarg);
                        if (o == COLD_MIN)
                                set.cold_s = (uint32_t) v * 60;
                        else if (o == HEAT_MIN)
                                set.heat_s = (uint32_t) v * 60;
                        else if (o == WAIT_DAYS)
                                set.heat_wait_s = (uint32_t) (v * RULES_DAY_S > UINT32_MAX ? UINT32_MAX : v * RULES_DAY_S);
                        else
                                set.cold_rest_s = (uint32_t) v * 60;
                        break;
                case COLD_SET: case HEAT_SET:
                        if (parse_decimal_centi(optarg, &t) < 0)
                                return fail("%s: \"%s\" is not a temperature in °C (like 10 or 10.5)",
                                            options[o - COLD_MIN].name, optarg);
                        if (o == COLD_SET)
                                set.cold_setpoint = t;
                        else
                                set.heat_setpoint = t;
                        break;
                default:
                        return EXIT_FAILURE;
                }
                mask |= 1u << (o - COLD_MIN);   /* the options are in RX_* order */
        }
        if (!wrap_raw)
                return fail("usage: prescribe WRAP [--cold-minutes N] ... | --clear");
        if (clear && any)
                return fail("--clear takes no other option");
        if (!clear && !any)
                return fail("nothing to prescribe: give at least one option, or --clear");
        wrap = wrap_arg(wrap_raw, id);

        if (clear) {
                if (api_call("prescribe", "ClearPrescription", NULL, "s", wrap) < 0)
                        return EXIT_FAILURE;
                printf("%s: prescription cleared; the configured defaults apply.\n", wrap);
                return EXIT_SUCCESS;
        }

        /* Only what is given goes to the daemon: what is not stays as it is in force (the door merges). */
        r = api_message("prescribe", "SetPrescription", &bus, &msg);
        if (r < 0)
                return EXIT_FAILURE;
        r = sd_bus_message_append(msg, "s", wrap);
        if (r >= 0)
                r = sd_bus_message_open_container(msg, 'a', "{sv}");
        if (r >= 0 && (mask & RX_COLD_S))
                r = sd_bus_message_append(msg, "{sv}", "cold_minutes", "u", set.cold_s / 60);
        if (r >= 0 && (mask & RX_COLD_SETPOINT))
                r = sd_bus_message_append(msg, "{sv}", "cold_setpoint_c", "d", set.cold_setpoint / 100.0);
        if (r >= 0 && (mask & RX_HEAT_S))
                r = sd_bus_message_append(msg, "{sv}", "heat_minutes", "u", set.heat_s / 60);
        if (r >= 0 && (mask & RX_HEAT_SETPOINT))
                r = sd_bus_message_append(msg, "{sv}", "heat_setpoint_c", "d", set.heat_setpoint / 100.0);
        if (r >= 0 && (mask & RX_HEAT_WAIT_S))
                r = sd_bus_message_append(msg, "{sv}", "heat_wait_days", "u", (uint32_t) (set.heat_wait_s / RULES_DAY_S));
        if (r >= 0 && (mask & RX_COLD_REST_S))
                r = sd_bus_message_append(msg, "{sv}", "cold_rest_minutes", "u", set.cold_rest_s / 60);
        if (r >= 0)
                r = sd_bus_message_close_container(msg);
        if (r < 0)
                return fail_errno(r, "prescribe: cannot build the D-Bus call: %m");
        if (api_send("prescribe", bus, msg, NULL) < 0)
                return EXIT_FAILURE;

        /* What is in force now, read back from the store. */
        r = store_prescription_get(c->store, wrap, &c->config.therapy, &rx, &prescribed);
        if (r < 0)
                return fail_errno(r, "prescribed, but cannot read it back: %m");
        printf("%s: prescribed: cold %" PRIu32 " min at %.2f °C, heat %" PRIu32 " min at %.2f °C, "
               "heat waits %" PRIu32 " days after an injury, %" PRIu32 " min rest between cold sessions.\n",
               wrap, rx.cold_s / 60, rx.cold_setpoint / 100.0, rx.heat_s / 60, rx.heat_setpoint / 100.0,
               (uint32_t) (rx.heat_wait_s / RULES_DAY_S), rx.cold_rest_s / 60);
        return EXIT_SUCCESS;
}

static int sessions_or_export(Ctl *c, int argc, char **argv, bool export) {
        static const struct option options[] = {
                { "since", required_argument, NULL, 's' },
                { "json",  no_argument,       NULL, 'j' },
                { 0 }
        };
        SessionRecord *recs = NULL;
        char id[WRAP_ID_MAX];
        const char *wrap = NULL;
        bool json = export;
        int64_t since = 0;
        size_t n = 0;
        int o, r;

        optind = 0; /* GNU getopt: start over, permuting again */
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0)
                switch (o) {
                case 1:
                        if (wrap)
                                return fail("%s takes at most one WRAP", argv[0]);
                        wrap = wrap_arg(optarg, id);
                        break;
                case 's':
                        if (parse_since(optarg, &since) < 0)
                                return fail("--since: \"%s\" is not a date (YYYY-MM-DD) or date and time", optarg);
                        break;
                case 'j':
                        if (export)
                                return fail("export always writes JSON; --json is for sessions");
                        json = true;
                        break;
                default:
                        return EXIT_FAILURE;
                }

        if (wrap) {
                StoredWrap sw;
                r = store_wrap_get(c->store, wrap, &sw);
                if (r == -ENOENT) {
                        /* A removed wrap's history stays: only refuse ids that never had any. */
                        r = store_last_session(c->store, wrap, &(SessionRecord) { 0 });
                        if (r == -ENOENT)
                                return fail("no wrap called \"%s\" has any sessions", wrap);
                }
        }
        r = store_sessions_list(c->store, wrap, since, INT64_MAX, &recs, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the sessions: %m");

        if (!json)
                printf("%-25s %-18s %-4s %-6s %-18s %8s %-9s %s\n", "REQUESTED", "WRAP", "MODE", "SOURCE",
                       "OUTCOME", "DURATION", "COMPLIANT", "REFUSAL");
        for (size_t i = 0; i < n; i++) {
                const SessionRecord *s = &recs[i];
                if (json) {
                        _cleanup_free_ char *line = NULL;
                        if (s->outcome == OUTCOME_OPEN)
                                continue; /* still running: its record is not final */
                        r = payload_session(s, &line);
                        if (r < 0) {
                                fail_errno(r, "cannot format session %s: %m", s->session_id);
                                free(recs); /* after: s points into it */
                                return EXIT_FAILURE;
                        }
                        puts(line);
                } else {
                        char iso[CLOCK_ISO_MAX], refusal[48] = "-";
                        if (s->refusal != REFUSAL_NONE)
                                snprintf(refusal, sizeof refusal, "%s%s%u min", refusal_reason_to_string(s->refusal),
                                         s->minutes_left ? ", " : "", s->minutes_left);
                        if (s->refusal != REFUSAL_NONE && !s->minutes_left)
                                snprintf(refusal, sizeof refusal, "%s", refusal_reason_to_string(s->refusal));
                        printf("%-25s %-18s %-4s %-6s %-18s %7" PRIu32 "s %-9s %s\n",
                               clock_format_iso(s->requested_at, iso), s->wrap, therapy_mode_to_string(s->mode),
                               request_source_to_string(s->source), session_outcome_to_string(s->outcome),
                               s->duration_s, s->compliant ? "yes" : "no", refusal);
                }
        }
        free(recs);
        if (fflush(stdout) != 0)
                return fail("cannot write: %m");
        return EXIT_SUCCESS;
}

static int cmd_sessions(Ctl *c, int argc, char **argv) {
        return sessions_or_export(c, argc, argv, false);
}

static int cmd_export(Ctl *c, int argc, char **argv) {
        return sessions_or_export(c, argc, argv, true);
}

static int cmd_compliance(Ctl *c, int argc, char **argv);

/* The clinic uplink's figures: its state file (read-only) and what the store holds past its cursor. */
static int cmd_uplink(Ctl *c, int argc, char **argv) {
        static const struct option options[] = {
                { "json", no_argument, NULL, 'j' },
                { 0 }
        };
        char iso[CLOCK_ISO_MAX];
        UplinkReport u;
        bool json = false;
        int o, r;

        optind = 0;
        while ((o = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (o) {
                case 'j':
                        json = true;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc)
                return fail("usage: uplink [--json]");
        r = uplink_report(c->store, c->config.uplink_state_path, &u);
        if (r < 0)
                return fail_errno(r, "cannot read the uplink's state %s: %m", c->config.uplink_state_path);

        if (json) {
                json_t *j = json_pack("{s:b, s:o, s:o, s:o, s:o, s:I, s:I}",
                                      "configured", u.configured,
                                      "pending", u.has_pending ? json_integer((json_int_t) u.pending) : json_null(),
                                      "last_success", u.status.last_success_at ?
                                              json_string(clock_format_iso(u.status.last_success_at, iso)) : json_null(),
                                      "last_error", u.status.last_error[0] ? json_string(u.status.last_error) : json_null(),
                                      "last_error_at", u.status.last_error[0] ?
                                              json_string(clock_format_iso(u.status.last_error_at, iso)) : json_null(),
                                      "sent", (json_int_t) u.status.sent,
                                      "rejected", (json_int_t) u.status.rejected);
                char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
                json_decref(j);
                if (!text)
                        return fail("out of memory");
                printf("%s\n", text);
                free(text);
                return EXIT_SUCCESS;
        }
        if (!u.configured)
                printf("Clinic uplink: has not run on this gateway (no %s)\n", c->config.uplink_state_path);
        else if (u.status.last_error[0])
                printf("Clinic uplink: failing, retrying\n");
        else
                printf("Clinic uplink: %s\n", u.has_pending && u.pending == 0 ? "up to date" : "delivering");
        if (u.has_pending)
                printf("Pending: %" PRIu64 " records\n", u.pending);
        printf("Last success: %s\n", u.status.last_success_at ? clock_format_iso(u.status.last_success_at, iso) : "never");
        if (u.status.last_error[0])
                printf("Last error: %s: %s\n", clock_format_iso(u.status.last_error_at, iso), u.status.last_error);
        printf("Delivered: %" PRIu64 " records\n", u.status.sent);
        if (u.status.rejected > 0)
                printf("Refused by the server: %" PRIu64 " records (kneewrap-uplink --rejected lists them)\n",
                       u.status.rejected);
        return EXIT_SUCCESS;
}

static int cmd_start(Ctl *c, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *session, *outcome, *refusal, *message, *wrap;
        char id[WRAP_ID_MAX];
        uint16_t minutes;
        int r;

        if (argc != 3 || (!streq(argv[2], "cold") && !streq(argv[2], "heat")))
                return fail("usage: start WRAP cold|heat");
        wrap = wrap_arg(argv[1], id);
        if (api_call("start", "StartSessionAs", &reply, "sss", wrap, argv[2], "cli") < 0)
                return EXIT_FAILURE;
        r = sd_bus_message_read(reply, "sssqs", &session, &outcome, &refusal, &minutes, &message);
        if (r < 0)
                return fail_errno(r, "start: unexpected answer from kneewrapd: %m");

        if (streq(outcome, "started")) {
                printf("%s: %s session started: %s (session %s).\n", wrap, argv[2], message, session);
                return EXIT_SUCCESS;
        }
        if (streq(outcome, "refused")) {
                if (minutes)
                        return fail("%s %s refused (%s, %u min left): %s. Recorded as session %s.", wrap, argv[2],
                                    refusal, minutes, message, session);
                return fail("%s %s refused (%s): %s.%s%s", wrap, argv[2], refusal, message,
                            streq(refusal, "store_unavailable") ? "" : " Recorded as session ",
                            streq(refusal, "store_unavailable") ? "" : session);
        }
        return fail("%s %s did not start (%s): %s. Recorded as session %s.", wrap, argv[2], outcome, message, session);
}

static int cmd_stop(Ctl *c, int argc, char **argv) {
        char id[WRAP_ID_MAX];
        const char *wrap;

        if (argc != 2)
                return fail("usage: stop WRAP");
        wrap = wrap_arg(argv[1], id);
        if (api_call("stop", "StopSessionAs", NULL, "ss", wrap, "cli") < 0)
                return EXIT_FAILURE;
        printf("%s: stop sent; the session is recorded as stopped by the user.\n", wrap);
        return EXIT_SUCCESS;
}

static int cmd_adopt(Ctl *c, int argc, char **argv) {
        int64_t seconds = 120;

        if (argc > 2)
                return fail("usage: adopt [SECONDS]");
        if (argc == 2 && parse_uint(argv[1], 3600, &seconds) < 0)
                return fail("adopt: SECONDS must be a whole number from 0 (close) to 3600, not \"%s\"", argv[1]);
        if (api_call("adopt", "OpenAdoption", NULL, "u", (uint32_t) seconds) < 0)
                return EXIT_FAILURE;
        if (seconds)
                printf("Adoption open for %" PRId64 " s: put the wrap in pairing mode near the gateway "
                       "(kneewrapctl status shows it once adopted).\n", seconds);
        else
                printf("Adoption closed.\n");
        return EXIT_SUCCESS;
}

static int cmd_remove(Ctl *c, int argc, char **argv) {
        char id[WRAP_ID_MAX];
        const char *wrap;

        if (argc != 2)
                return fail("usage: remove WRAP");
        wrap = wrap_arg(argv[1], id);
        if (api_call("remove", "RemoveWrap", NULL, "s", wrap) < 0)
                return EXIT_FAILURE;
        printf("%s: removed, and its Bluetooth bond forgotten; its history stays in the store.\n", wrap);
        return EXIT_SUCCESS;
}

static int read_bool_property(sd_bus *bus, const char *name, int *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_get_property_trivial(bus, BUS_API_NAME, BUS_API_PATH, BUS_API_INTERFACE, name, &e, 'b', ret);
        return r < 0 ? -bus_fail("status", &e, r) : 0;
}

static int cmd_status(Ctl *c, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *version = NULL, *status = NULL;
        const char *id, *address, *name, *mode;
        int adoption = 0, store = 0, mqtt = 0, connected, r;
        uint32_t remaining;
        unsigned n = 0;

        if (argc != 1)
                return fail("status takes no arguments");
        if (bus_open(&bus) < 0)
                return EXIT_FAILURE;
        r = sd_bus_get_property_string(bus, BUS_API_NAME, BUS_API_PATH, BUS_API_INTERFACE, "Version", &e, &version);
        if (r < 0)
                return bus_fail("status", &e, r);
        r = sd_bus_get_property_string(bus, BUS_API_NAME, BUS_API_PATH, BUS_API_INTERFACE, "Status", &e, &status);
        if (r < 0)
                return bus_fail("status", &e, r);
        if (read_bool_property(bus, "AdoptionOpen", &adoption) < 0 || read_bool_property(bus, "StoreAvailable", &store) < 0 ||
            read_bool_property(bus, "MqttConnected", &mqtt) < 0)
                return EXIT_FAILURE;
        r = sd_bus_call_method(bus, BUS_API_NAME, BUS_API_PATH, BUS_API_INTERFACE, "ListWraps", &e, &reply, NULL);
        if (r < 0)
                return bus_fail("status", &e, r);

        printf("kneewrapd %s: %s\n", version, status);
        printf("  store: %s; MQTT: %s; adoption: %s\n", store ? "available" : "UNAVAILABLE (sessions are refused)",
               mqtt ? "connected" : "not connected", adoption ? "open" : "closed");

        r = sd_bus_message_enter_container(reply, 'a', "(sssbsu)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssbsu)", &id, &address, &name, &connected, &mode,
                                                  &remaining)) > 0) {
                if (n++ == 0)
                        printf("%-18s %-17s %-20s %-13s %s\n", "WRAP", "ADDRESS", "NAME", "LINK", "SESSION");
                char session[64] = "-";
                if (!streq(mode, "none"))
                        snprintf(session, sizeof session, "%s, %" PRIu32 ":%02" PRIu32 " left", mode,
                                 remaining / 60, remaining % 60);
                printf("%-18s %-17s %-20s %-13s %s\n", id, address, *name ? name : "-",
                       connected ? "connected" : "not connected", session);
        }
        if (r < 0)
                return fail_errno(r, "status: unexpected answer from kneewrapd: %m");
        if (n == 0)
                printf("No wraps adopted yet: kneewrapctl adopt\n");
        return EXIT_SUCCESS;
}

/* ---- what a clinic reads (store, read-only) and records (D-Bus) ---- */

/* --since DATE / --until DATE / --days N, parsed the same way by every command. */
typedef struct Period {
        const char *since_date, *until_date;
        int64_t days;
        int64_t since, until;
} Period;

enum { OPT_SINCE = 0x200, OPT_UNTIL, OPT_DAYS, OPT_JSON };

#define PERIOD_OPTIONS \
        { "since", required_argument, NULL, OPT_SINCE }, \
        { "until", required_argument, NULL, OPT_UNTIL }, \
        { "days",  required_argument, NULL, OPT_DAYS }

static int period_option(Period *p, int o, const char *arg) {
        switch (o) {
        case OPT_SINCE:
                p->since_date = arg;
                return 1;
        case OPT_UNTIL:
                p->until_date = arg;
                return 1;
        case OPT_DAYS:
                if (parse_uint(arg, 3660, &p->days) < 0 || p->days < 1)
                        return -fail("--days: a number of days from 1, not \"%s\"", arg);
                return 1;
        }
        return 0;
}

/* The period as local days (clock_local_period: the one definition). */
static int period_resolve(Ctl *c, Period *p) {
        if (p->days && p->since_date)
                return -fail("--days and --since both say where the period starts: give one");
        if (clock_local_period(p->since_date, p->until_date, clock_real_sec(), (unsigned) (p->days ? p->days : 30),
                               &p->since, &p->until) < 0)
                return -fail("--since and --until take local dates, YYYY-MM-DD, the first not after the second");
        return 0;
}

/* A wrap the store knows (adopted now, or removed with its history). */
static int known_wrap(Ctl *c, const char *arg, char id[static WRAP_ID_MAX], StoredWrap *ret) {
        StoredWrap sw;
        int r;

        wrap_arg(arg, id);
        r = store_wrap_get(c->store, id, ret ? ret : &sw);
        if (r == -ENOENT)
                return -fail("no adopted wrap is called \"%s\"", arg);
        if (r < 0)
                return -fail_errno(r, "cannot read the wrap: %m");
        return 0;
}

static int print_json(json_t *j) {
        int r;

        if (!j)
                return fail("out of memory");
        r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
        json_decref(j);
        if (r < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
                return fail("cannot write: %m");
        return EXIT_SUCCESS;
}

/* Options: the WRAP, --json, and the period. */
static int read_args(int argc, char **argv, const char *usage, const char **ret_wrap, bool *ret_json, Period *p) {
        static const struct option options[] = {
                PERIOD_OPTIONS,
                { "json", no_argument, NULL, OPT_JSON },
                { 0 }
        };
        int o, r;

        optind = 0;
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0) {
                if (o == 1 && !*ret_wrap) {
                        *ret_wrap = optarg;
                        continue;
                }
                if (o == OPT_JSON && ret_json) {
                        *ret_json = true;
                        continue;
                }
                r = p ? period_option(p, o, optarg) : 0;
                if (r < 0)
                        return r;
                if (r == 0)
                        return -fail("usage: %s", usage);
        }
        if (!*ret_wrap)
                return -fail("usage: %s", usage);
        return 0;
}

static int cmd_injuries(Ctl *c, int argc, char **argv) {
        _cleanup_free_ InjuryRecord *list = NULL;
        const char *arg = NULL;
        char id[WRAP_ID_MAX], at[CLOCK_ISO_MAX], res[CLOCK_ISO_MAX];
        bool json = false;
        size_t n = 0;
        int r;

        if (read_args(argc, argv, "injuries WRAP [--json]", &arg, &json, NULL) < 0 || known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;
        r = store_injuries_list(c->store, id, &list, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the injuries: %m");
        if (json) {
                json_t *a = json_array();
                for (size_t i = 0; a && i < n; i++)
                        json_array_append_new(a, report_injury_json(&list[i]));
                return print_json(a);
        }
        if (n == 0) {
                printf("%s: no injury recorded.\n", id);
                return EXIT_SUCCESS;
        }
        printf("%-4s %-25s %-10s %s\n", "ID", "INJURY (R2 COUNTS FROM)", "DATE", "RESOLVED");
        for (size_t i = 0; i < n; i++)
                printf("%-4" PRId64 " %-25s %-10s %s\n", list[i].id, clock_format_iso(list[i].at, at),
                       *list[i].date ? list[i].date : "-",
                       list[i].resolved_at ? clock_format_iso(list[i].resolved_at, res) : "no: heat waits (R2)");
        return EXIT_SUCCESS;
}

/* The append-only change history: every change to an injury, a prescription or the adoption,
 * with where it came from and the caller's uid. */
static int cmd_history(Ctl *c, int argc, char **argv) {
        _cleanup_free_ AuditRecord *list = NULL;
        const char *arg = NULL;
        char id[WRAP_ID_MAX], at[CLOCK_ISO_MAX], who[sizeof list->claimed_client + 32];
        bool json = false;
        size_t n = 0;
        int r;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--json"))
                        json = true;
                else if (!arg && argv[i][0] != '-')
                        arg = argv[i];
                else
                        return fail("usage: history [WRAP] [--json]");
        }
        if (arg && known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;
        r = store_audit_list(c->store, arg ? id : NULL, &list, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the history: %m");
        if (json) {
                json_t *a = json_array();
                for (size_t i = 0; a && i < n; i++)
                        json_array_append_new(a, report_audit_json(&list[i]));
                return print_json(a);
        }
        if (n == 0) {
                printf("No change recorded.\n");
                return EXIT_SUCCESS;
        }
        printf("%-25s %-18s %-20s %-5s %-10s %s\n", "AT", "WRAP", "CHANGE", "VIA", "WHO", "DETAIL");
        for (size_t i = 0; i < n; i++) {
                const AuditRecord *e = &list[i];
                if (e->uid >= 0)
                        snprintf(who, sizeof who, "uid %" PRId64, e->uid);
                else if (*e->claimed_client)
                        /* MQTT 5's user property: what the publisher says, nobody checked. */
                        snprintf(who, sizeof who, "claims \"%s\" (not verified)", e->claimed_client);
                else
                        snprintf(who, sizeof who, "-");
                printf("%-25s %-18s %-20s %-5s %-10s %s%s%s\n", clock_format_iso(e->at, at), *e->wrap ? e->wrap : "-",
                       e->what, request_source_to_string(e->source), who, *e->detail ? e->detail : "-",
                       *e->topic ? "  on " : "", e->topic);
        }
        return EXIT_SUCCESS;
}

static int diary_list(Ctl *c, int argc, char **argv) {
        _cleanup_free_ DiaryEntry *list = NULL;
        const char *arg = NULL;
        char id[WRAP_ID_MAX], at[CLOCK_ISO_MAX];
        Period p = { 0 };
        bool json = false;
        size_t n = 0;
        int r;

        if (read_args(argc, argv, "diary WRAP [--since DATE] [--until DATE] [--json]", &arg, &json, &p) < 0 ||
            known_wrap(c, arg, id, NULL) < 0 || period_resolve(c, &p) < 0)
                return EXIT_FAILURE;
        r = store_diary_list(c->store, id, p.since, &list, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the diary: %m");
        if (json) {
                json_t *a = json_array();
                for (size_t i = 0; a && i < n; i++)
                        if (list[i].at < p.until)
                                json_array_append_new(a, report_diary_json(&list[i]));
                return print_json(a);
        }
        printf("%-25s %-5s %-6s %s\n", "AT", "PAIN", "WHERE", "FLAGS");
        for (size_t i = 0; i < n; i++) {
                const DiaryEntry *e = &list[i];
                if (e->at >= p.until)
                        continue;
                printf("%-25s %2u/10 %-6s %s%s%s%s%s\n", clock_format_iso(e->at, at), e->score,
                       diary_where_to_string(e->where), e->flags ? "" : "-",
                       e->flags & DIARY_SWELLING ? "swelling " : "", e->flags & DIARY_POP ? "pop " : "",
                       e->flags & DIARY_GIVING_WAY ? "giving_way " : "", e->flags & DIARY_CATCHING ? "catching" : "");
        }
        return EXIT_SUCCESS;
}

static int cmd_prescription(Ctl *c, int argc, char **argv) {
        const char *arg = NULL;
        char id[WRAP_ID_MAX];
        RulesPrescription rx;
        bool json = false, prescribed = false;
        int r;

        if (read_args(argc, argv, "prescription WRAP [--json]", &arg, &json, NULL) < 0 || known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;
        r = store_prescription_get(c->store, id, &c->config.therapy, &rx, &prescribed);
        if (r < 0)
                return fail_errno(r, "cannot read the prescription: %m");
        if (json)
                return print_json(report_prescription_json(&rx, prescribed));
        printf("%s: %s\n"
               "  cold: %" PRIu32 " min at %.2f °C, at least %" PRIu32 " min rest between cold sessions\n"
               "  heat: %" PRIu32 " min at %.2f °C, not before %" PRIu32 " days after an injury\n",
               id, prescribed ? "prescribed by the clinic" : "the gateway's defaults (no prescription)",
               rx.cold_s / 60, rx.cold_setpoint / 100.0, rx.cold_rest_s / 60,
               rx.heat_s / 60, rx.heat_setpoint / 100.0, (uint32_t) (rx.heat_wait_s / RULES_DAY_S));
        return EXIT_SUCCESS;
}

static int cmd_runs(Ctl *c, int argc, char **argv) {
        _cleanup_free_ RunRecord *list = NULL;
        const char *arg = NULL;
        char id[WRAP_ID_MAX], at[CLOCK_ISO_MAX];
        Period p = { 0 };
        bool json = false;
        json_t *a = NULL;
        size_t n = 0;
        int r;

        if (read_args(argc, argv, "runs WRAP [--since DATE] [--until DATE] [--json]", &arg, &json, &p) < 0 ||
            known_wrap(c, arg, id, NULL) < 0 || period_resolve(c, &p) < 0)
                return EXIT_FAILURE;
        r = store_runs_list(c->store, id, p.since, p.until, &list, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the runs: %m");
        if (json)
                a = json_array();
        else
                printf("%-4s %-25s %4s %6s  %s\n", "ID", "ENDED", "MIN", "KM", "COLD AFTER IT (within 60 min)");
        for (size_t i = 0; i < n; i++) {
                const RunRecord *run = &list[i];
                SessionRecord s = { .outcome = OUTCOME_OPEN };
                const char *sid = *run->followed_by ? run->followed_by : run->cold_press;

                if (*sid && store_session_get(c->store, sid, &s) < 0)
                        memset(&s, 0, sizeof s);
                if (json) {
                        if (a)
                                json_array_append_new(a, report_run_json(run, &s));
                        continue;
                }
                printf("%-4" PRId64 " %-25s %4" PRIu32 " %6.2f  ", run->id, clock_format_iso(run->ended_at, at),
                       run->minutes, run->meters / 1000.0);
                if (*run->followed_by)
                        printf("followed: %s\n", run->followed_by);
                else if (*run->cold_press && s.outcome == OUTCOME_REFUSED)
                        printf("NOT followed: cold refused (%s%s)\n", refusal_reason_to_string(s.refusal),
                               s.minutes_left ? ", rest left" : "");
                else if (*run->cold_press)
                        printf("NOT followed: cold %s after %" PRIu32 " min\n", session_outcome_to_string(s.outcome),
                               s.duration_s / 60);
                else
                        printf("NOT followed: no cold\n");
        }
        return json ? print_json(a) : EXIT_SUCCESS;
}

static int cmd_run(Ctl *c, int argc, char **argv) {
        enum { AT = 0x300, MINUTES, KM };
        static const struct option options[] = {
                { "at",      required_argument, NULL, AT },
                { "minutes", required_argument, NULL, MINUTES },
                { "km",      required_argument, NULL, KM },
                { 0 }
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char id[WRAP_ID_MAX], iso[CLOCK_ISO_MAX];
        const char *wrap = NULL;
        int64_t at = 0, minutes = 0, run_id = 0;
        int32_t centi_km = 0;
        bool date_only;
        int o;

        optind = 0;
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0)
                switch (o) {
                case 1:
                        if (wrap)
                                return fail("run takes one WRAP");
                        wrap = wrap_arg(optarg, id);
                        break;
                case AT:
                        if (clock_parse_iso(optarg, &at, &date_only) < 0 || date_only)
                                return fail("--at: when the run ended, a date and time (YYYY-MM-DDTHH:MM), not \"%s\"", optarg);
                        break;
                case MINUTES:
                        if (parse_uint(optarg, 1440, &minutes) < 0 || minutes < 1)
                                return fail("--minutes: a whole number from 1 to 1440, not \"%s\"", optarg);
                        break;
                case KM:
                        if (parse_decimal_centi(optarg, &centi_km) < 0 || centi_km <= 0 || centi_km > 100000)
                                return fail("--km: a distance above 0, at most 1000 (\"8.2\"), not \"%s\"", optarg);
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (!wrap)
                return fail("usage: run WRAP [--at TIME] [--minutes N] [--km X]");
        if (api_call("run", "RecordRun", &reply, "sxuus", wrap, at, (uint32_t) minutes,
                     (uint32_t) centi_km * 10, "cli") < 0)
                return EXIT_FAILURE;
        if (sd_bus_message_read(reply, "x", &run_id) < 0)
                return fail("run: cannot read kneewrapd's answer");
        printf("%s: run %" PRId64 " recorded, ended %s; a cold session within %d min follows it.\n", wrap, run_id,
               at ? clock_format_iso(at, iso) : "now", RUN_FOLLOW_WINDOW_S / 60);
        return EXIT_SUCCESS;
}

static int cmd_profile(Ctl *c, int argc, char **argv) {
        enum { LABEL = 0x300, KNEE, REF };
        static const struct option options[] = {
                { "label",      required_argument, NULL, LABEL },
                { "knee",       required_argument, NULL, KNEE },
                { "clinic-ref", required_argument, NULL, REF },
                { "json",       no_argument,       NULL, OPT_JSON },
                { 0 }
        };
        const char *arg = NULL, *label = NULL, *knee = NULL, *ref = NULL;
        char id[WRAP_ID_MAX];
        PatientProfile p;
        bool json = false;
        int o, r;

        optind = 0;
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0)
                switch (o) {
                case 1:
                        if (arg)
                                return fail("profile takes one WRAP");
                        arg = optarg;
                        break;
                case LABEL:
                        label = optarg;
                        break;
                case KNEE:
                        if (*optarg && knee_from_string(optarg) < 0)
                                return fail("--knee: left or right (or \"\" to clear), not \"%s\"", optarg);
                        knee = optarg;
                        break;
                case REF:
                        ref = optarg;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (!arg)
                return fail("usage: profile WRAP [--label TEXT] [--knee left|right] [--clinic-ref TEXT] [--json]");
        if (known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;
        r = store_profile_get(c->store, id, &p);
        if (r < 0)
                return fail_errno(r, "cannot read the profile: %m");

        if (label || knee || ref) {
                /* What is not given stays as it is: the daemon sets the whole profile. */
                if (api_call("profile", "SetProfile", NULL, "ssss", id, label ? label : p.label,
                             knee ? knee : knee_to_string(p.knee) ? knee_to_string(p.knee) : "",
                             ref ? ref : p.clinic_ref) < 0)
                        return EXIT_FAILURE;
                r = store_profile_get(c->store, id, &p);
                if (r < 0)
                        return fail_errno(r, "cannot read the profile back: %m");
        }
        if (json)
                return print_json(report_profile_json(&p));
        printf("%s:\n  label: %s\n  knee: %s\n  clinic reference: %s\n", id, *p.label ? p.label : "(none)",
               knee_to_string(p.knee) ? knee_to_string(p.knee) : "(not recorded)", *p.clinic_ref ? p.clinic_ref : "(none)");
        return EXIT_SUCCESS;
}

static int cmd_alerts(Ctl *c, int argc, char **argv) {
        enum { ACK = 0x300, ALL };
        static const struct option options[] = {
                { "ack",  required_argument, NULL, ACK },
                { "all",  no_argument,       NULL, ALL },
                { "json", no_argument,       NULL, OPT_JSON },
                { 0 }
        };
        _cleanup_free_ AlertRecord *list = NULL;
        const char *arg = NULL;
        char id[WRAP_ID_MAX], at[CLOCK_ISO_MAX];
        bool json = false, all = false;
        int64_t ack = 0;
        size_t n = 0;
        int o, r;

        optind = 0;
        while ((o = getopt_long(argc, argv, "-", options, NULL)) >= 0)
                switch (o) {
                case 1:
                        if (arg)
                                return fail("alerts takes at most one WRAP");
                        arg = optarg;
                        break;
                case ACK:
                        if (parse_uint(optarg, INT64_MAX / 2, &ack) < 0 || ack < 1)
                                return fail("--ack: an alert's id (see kneewrapctl alerts), not \"%s\"", optarg);
                        break;
                case ALL:
                        all = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (arg && known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;

        if (ack) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                const char *wrap, *kind;
                AlertRecord a;

                /* An id names one alert; with a WRAP, it must be that wrap's. */
                r = store_alert_get(c->store, ack, &a);
                if (r == -ENOENT)
                        return fail("no alert has the id %" PRId64, ack);
                if (r >= 0 && arg && !streq(a.wrap, id))
                        return fail("alert %" PRId64 " is not %s's but %s's", ack, id, a.wrap);
                if (api_call("alerts --ack", "AcknowledgeAlert", &reply, "x", ack) < 0)
                        return EXIT_FAILURE;
                if (sd_bus_message_read(reply, "ss", &wrap, &kind) < 0)
                        return fail("alerts --ack: cannot read kneewrapd's answer");
                printf("%s: alert %" PRId64 " (%s) acknowledged.\n", wrap, ack, kind);
                return EXIT_SUCCESS;
        }

        r = store_alerts_list(c->store, arg ? id : NULL, 0, INT64_MAX, !all, &list, &n);
        if (r < 0)
                return fail_errno(r, "cannot read the alerts: %m");
        if (json) {
                json_t *a = json_array();
                for (size_t i = 0; a && i < n; i++)
                        json_array_append_new(a, report_alert_json(&list[i]));
                return print_json(a);
        }
        if (n == 0) {
                printf("No %salerts.\n", all ? "" : "open ");
                return EXIT_SUCCESS;
        }
        printf("%-5s %-18s %-25s %-19s %s\n", "ID", "WRAP", "RAISED", "KIND", "TEXT");
        for (size_t i = 0; i < n; i++)
                printf("%-5" PRId64 " %-18s %-25s %-19s %s%s\n", list[i].id, list[i].wrap, clock_format_iso(list[i].at, at),
                       alert_kind_to_string(list[i].kind), list[i].text, list[i].acked_at ? " [acknowledged]" : "");
        if (!all)
                printf("Acknowledge one with: kneewrapctl alerts --ack ID\n");
        return EXIT_SUCCESS;
}

static int cmd_compliance(Ctl *c, int argc, char **argv) {
        const char *arg = NULL;
        char id[WRAP_ID_MAX], from[11], to[11];
        Period p = { .days = 0 };
        bool json = false;
        Compliance co;
        size_t days;
        int r;

        if (read_args(argc, argv, "compliance WRAP [--days N | --since DATE] [--until DATE] [--json]", &arg, &json, &p) < 0 ||
            known_wrap(c, arg, id, NULL) < 0)
                return EXIT_FAILURE;
        if (!p.days && !p.since_date)
                p.days = 7;
        if (period_resolve(c, &p) < 0)
                return EXIT_FAILURE;
        r = store_compliance(c->store, id, p.since, p.until, &co);
        if (r < 0)
                return fail_errno(r, "cannot compute compliance: %m");
        clock_format_date(p.since, from);
        clock_format_date(p.until - 1, to);
        if (json) {
                json_t *j = payload_compliance_json(&co);
                if (j && (json_object_set_new(j, "wrap", json_string(id)) < 0 ||
                          json_object_set_new(j, "since", json_string(from)) < 0 ||
                          json_object_set_new(j, "until", json_string(to)) < 0)) {
                        json_decref(j);
                        j = NULL;
                }
                return print_json(j);
        }
        days = (size_t) ((p.until - p.since + RULES_DAY_S / 2) / RULES_DAY_S);
        printf("%s, %s to %s (%zu local days):\n", id, from, to, days);
        printf("  days with a complete cold session: %" PRIu32 " of %zu\n", co.days_with_cold, days);
        printf("  cold sessions completed (>= 10 min): %" PRIu32 "\n", co.cold_completed);
        printf("  cold sessions stopped early (< 10 min, R7): %" PRIu32 "\n", co.cold_incomplete);
        printf("  runs followed by cold within %d min: %" PRIu32 " of %" PRIu32 "\n", RUN_FOLLOW_WINDOW_S / 60,
               co.runs_followed, co.runs);
        printf("  cold requests refused: %" PRIu32 "\n", co.cold_refused);
        printf("  heat requests refused: %" PRIu32 " (%" PRIu32 " in the first week after an injury)\n",
               co.heat_refused, co.heat_refused_first_week);
        printf("  therapy minutes: %" PRIu32 "\n", co.minutes);
        return EXIT_SUCCESS;
}

/* Writes to a temporary file beside `path`, then renames it over: a reader never sees half a report. */
static FILE *open_output(const char *path, char **ret_tmp) {
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int fd;

        if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
                return NULL;
        fd = mkstemp(tmp);   /* 0600: a report is health data */
        if (fd < 0)
                return NULL;
        f = fdopen(fd, "w");
        if (!f) {
                close(fd);
                unlink(tmp);
                return NULL;
        }
        *ret_tmp = tmp;
        tmp = NULL;
        return f;
}

static int cmd_report(Ctl *c, int argc, char **argv) {
        enum { FORMAT = 0x300, WHAT, OUT };
        static const struct option options[] = {
                PERIOD_OPTIONS,
                { "format", required_argument, NULL, FORMAT },
                { "what",   required_argument, NULL, WHAT },
                { "output", required_argument, NULL, OUT },
                { 0 }
        };
        static const char *const usage =
                "report WRAP [--since DATE] [--until DATE] --format csv|json|fhir|html "
                "[--what sessions|runs|diary|alerts|history] [-o FILE]";
        _cleanup_free_ char *tmp = NULL;
        const char *arg = NULL, *format = NULL, *out = NULL;
        char id[WRAP_ID_MAX];
        int what = REPORT_SESSIONS;
        bool what_given = false;
        ReportData d;
        Period p = { 0 };
        FILE *f = stdout;
        int o, r;

        optind = 0;
        while ((o = getopt_long(argc, argv, "-o:", options, NULL)) >= 0) {
                switch (o) {
                case 1:
                        if (arg)
                                return fail("report takes one WRAP");
                        arg = optarg;
                        continue;
                case FORMAT:
                        if (!streq(optarg, "csv") && !streq(optarg, "json") && !streq(optarg, "fhir") && !streq(optarg, "html"))
                                return fail("--format: csv, json, fhir or html, not \"%s\"", optarg);
                        format = optarg;
                        continue;
                case WHAT:
                        what = report_table_from_string(optarg);
                        if (what < 0)
                                return fail("--what: sessions, runs, diary, alerts or history, not \"%s\"", optarg);
                        what_given = true;
                        continue;
                case 'o':
                case OUT:
                        out = optarg;
                        continue;
                }
                r = period_option(&p, o, optarg);
                if (r < 0)
                        return EXIT_FAILURE;
                if (r == 0)
                        return fail("usage: %s", usage);
        }
        if (!arg || !format)
                return fail("usage: %s", usage);
        if (what_given && !streq(format, "csv"))
                return fail("--what picks the table of a CSV report; the other formats hold every table");
        if (known_wrap(c, arg, id, NULL) < 0 || period_resolve(c, &p) < 0)
                return EXIT_FAILURE;

        r = report_load(c->store, id, &c->config.therapy, p.since, p.until, clock_real_sec(), &d);
        if (r < 0)
                return fail_errno(r, "cannot read the records: %m (%s)", store_errmsg(c->store));
        if (out) {
                f = open_output(out, &tmp);
                if (!f) {
                        report_data_done(&d);
                        return fail("cannot write %s: %m", out);
                }
        }
        if (streq(format, "csv"))
                r = report_csv(&d, (ReportTable) what, f);
        else if (streq(format, "html"))
                r = report_html(&d, f);
        else {
                json_t *j = streq(format, "json") ? report_json(&d) : report_fhir(&d);
                r = j && json_dumpf(j, f, JSON_INDENT(1) | JSON_REAL_PRECISION(15)) == 0 && fputc('\n', f) != EOF
                        ? 0 : -ENOMEM;
                json_decref(j);
        }
        report_data_done(&d);
        if (fflush(f) != 0 || (out && fsync(fileno(f)) < 0))
                r = r < 0 ? r : -errno;
        if (out) {
                if (fclose(f) != 0 && r >= 0)
                        r = -errno;
                if (r >= 0 && rename(tmp, out) < 0)
                        r = -errno;
                if (r < 0)
                        unlink(tmp);
        }
        if (r < 0)
                return fail_errno(r, "cannot write the report: %m");
        if (out)
                fprintf(stderr, "%s: %s report written to %s\n", id, format, out);
        return EXIT_SUCCESS;
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_DB };
        static const struct option options[] = {
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, ARG_VERSION },
                { "config",  required_argument, NULL, 'c' },
                { "db",      required_argument, NULL, ARG_DB },
                { 0 }
        };
        static const struct {
                const char *name;
                int (*run)(Ctl *c, int argc, char **argv);
                bool store;
        } commands[] = {
                { "wraps",      cmd_wraps,       true },
                { "injury",     cmd_injury,      false },
                { "diary",      cmd_diary,       true },   /* adds through D-Bus; lists from the store */
                { "prescribe",  cmd_prescribe,   true },
                { "sessions",   cmd_sessions,    true },
                { "export",     cmd_export,      true },
                { "compliance", cmd_compliance,  true },
                { "uplink",     cmd_uplink,      true },
                { "status",     cmd_status,      false },
                { "start",      cmd_start,       false },
                { "stop",       cmd_stop,        false },
                { "adopt",      cmd_adopt,       false },
                { "remove",     cmd_remove,      false },
                { "injuries",   cmd_injuries,    true },
                { "history",    cmd_history,     true },
                { "prescription", cmd_prescription, true },
                { "runs",       cmd_runs,        true },
                { "run",        cmd_run,         false },
                { "profile",    cmd_profile,     true },
                { "alerts",     cmd_alerts,      true },
                { "report",     cmd_report,      true },
        };
        Ctl c = { .config_path = KW_DEFAULT_CONFIG };
        int o, r;

        /* '+': options after the command belong to it. */
        while ((o = getopt_long(argc, argv, "+hc:", options, NULL)) >= 0)
                switch (o) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("kneewrapctl %s\n", KW_VERSION);
                        return EXIT_SUCCESS;
                case 'c':
                        c.config_path = optarg;
                        c.explicit_config = true;
                        break;
                case ARG_DB:
                        c.db_path = optarg;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind >= argc)
                return fail("no command given; see --help");

        /* Quiet but for warnings and alerts (R8, R9): each command says what it did. */
        log_setup(LOG_WARNING);

        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                if (!streq(argv[optind], commands[i].name))
                        continue;
                if (commands[i].store && ctl_open(&c) < 0) {
                        ctl_close(&c);
                        return EXIT_FAILURE;
                }
                r = commands[i].run(&c, argc - optind, argv + optind);
                ctl_close(&c);
                return r;
        }
        return fail("unknown command \"%s\"; see --help", argv[optind]);
}
