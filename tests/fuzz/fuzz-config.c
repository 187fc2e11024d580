/* fuzz-config: kneewrapd.conf's parser (config_load_stream) on arbitrary bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *errors = NULL;
        size_t n_errors = 0;
        FILE *in, *err;
        Config c;
        int r;

        if (size == 0)
                return 0;
        in = fmemopen((void *) data, size, "r");
        err = open_memstream(&errors, &n_errors);
        CHECK(in && err);
        config_init(&c);
        r = config_load_stream(&c, in, "fuzz.conf", err);
        fclose(in);
        fclose(err);

        /* Valid, or rejected with at least one "file:line: ..." line and the defaults kept. */
        CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
        if (r == -EINVAL)
                CHECK(n_errors > 0 && strncmp(errors, "fuzz.conf:", 10) == 0);
        if (r == 0) {
                CHECK(c.base_topic && c.discovery_prefix && c.store_path);
                CHECK(c.n_allow <= CONFIG_MAX_ALLOW);
                CHECK(c.keepalive > 0);
                for (unsigned i = 0; i < c.n_allow; i++)
                        CHECK(strlen(c.allow[i]) == 17);
        }
        config_done(&c);
        free(errors);
        return 0;
}
