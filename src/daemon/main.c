/* kneewrapd: the gateway daemon's entry point; the manager does the work. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "kw-build.h"
#include "log.h"
#include "manager.h"

static void help(void) {
        printf("Usage: %s [OPTIONS]\n"
               "\n"
               "The kneewrap gateway: connects to knee wraps over Bluetooth LE, enforces the\n"
               "therapy rules, records every session and publishes over MQTT.\n"
               "\n"
               "  -h --help            Show this help and exit\n"
               "     --version         Show the version and exit\n"
               "  -c --config FILE     Read FILE instead of %s\n"
               "     --check-config    Check the configuration, print every error, and exit\n"
               "  -v --verbose         Log more (repeat for more still)\n"
               "\n"
               "See kneewrapd(8) and kneewrapd.conf(5).\n",
               program_invocation_short_name, KW_DEFAULT_CONFIG);
}

static int check_config(const char *path) {
        Config c;
        int r;

        config_init(&c);
        r = config_load(&c, path, stderr);
        config_done(&c);
        if (r == -EINVAL) {
                fprintf(stderr, "%s: invalid\n", path);
                return EXIT_FAILURE;
        }
        if (r < 0) {
                errno = -r;
                fprintf(stderr, "%s: cannot read: %m\n", path);
                return EXIT_FAILURE;
        }
        printf("%s: valid\n", path);
        return EXIT_SUCCESS;
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CHECK_CONFIG };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "verbose",      no_argument,       NULL, 'v' },
                { 0 }
        };
        const char *config_path = KW_DEFAULT_CONFIG;
        bool explicit_config = false, check = false;
        Manager *m = NULL;
        int c, r, verbose = 0, scale;

        while ((c = getopt_long(argc, argv, "hc:v", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("kneewrapd %s\n", KW_VERSION);
                        return EXIT_SUCCESS;
                case 'c':
                        config_path = optarg;
                        explicit_config = true;
                        break;
                case ARG_CHECK_CONFIG:
                        check = true;
                        break;
                case 'v':
                        verbose++;
                        break;
                default:
                        return EXIT_FAILURE; /* getopt said why */
                }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument \"%s\"; see --help\n", program_invocation_short_name, argv[optind]);
                return EXIT_FAILURE;
        }

        if (check)
                return check_config(config_path);

        /* Time first: every timestamp after this is on the (maybe scaled) clock. */
        scale = clock_setup();
        log_setup(LOG_INFO + verbose > LOG_DEBUG ? LOG_DEBUG : LOG_INFO + verbose);
        if (scale < 0) {
                log_error("KNEEWRAP_TIME_SCALE must be a whole number from 1 to 100000.");
                return EXIT_FAILURE;
        }
        if (clock_scale_ignored())
                log_warning("KNEEWRAP_TIME_SCALE is set and ignored: this build (meson -Dtime_scale=disabled) "
                            "runs on real time only.");
        if (scale != 1)
                log_warning("KNEEWRAP_TIME_SCALE=%d: time runs %d times faster than the wall clock. "
                            "For simulations and tests only, never with a person wearing a wrap.", scale, scale);

        /* The packaged config is optional: without it, the built-in defaults apply. */
        if (!explicit_config && access(config_path, F_OK) < 0 && errno == ENOENT) {
                log_notice("%s does not exist: using the built-in defaults.", config_path);
                config_path = NULL;
        }

        r = manager_new(config_path, &m);
        if (r < 0)
                return EXIT_FAILURE;

        r = manager_run(m);
        manager_free(m);
        return r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
