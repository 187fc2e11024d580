/* test-uplink-state: the clinic uplink's refused records, kept beside its cursor (rejected.db). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "uplink-state.h"
#include "util.h"

#define CREATED 1700000000

typedef struct Fixture {
        char dir[64];
        char path[96];
        UplinkState *u;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        snprintf(f->dir, sizeof f->dir, "/tmp/kw-uplink-state-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof f->path, "%s/uplink.db", f->dir);
        assert_int_equal(uplink_state_open(f->path, false, &f->u, NULL), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        char cmd[128];

        uplink_state_close(f->u);
        snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void test_refused_kept_counted_retried_delivered(void **state) {
        Fixture *f = *state;
        StoreChange a = { .seq = 7, .rev = 1, .kind = CHANGE_SESSION, .key = "6f1c2a52-0d4e-4c1b-9a77-3a1d2a9b8c01" };
        StoreChange b = { .seq = 9, .rev = 2, .kind = CHANGE_RUN, .key = "3" };
        UplinkRejected *list = NULL, next;
        UplinkStatus st;
        UplinkState *ro = NULL;
        struct stat s;
        char file[128];
        unsigned n = 0;
        size_t k;

        /* The refusals are health data: their own file, 0600. */
        snprintf(file, sizeof file, "%s/rejected.db", f->dir);
        assert_int_equal(stat(file, &s), 0);
        assert_int_equal(s.st_mode & 0777, 0600);

        assert_int_equal(uplink_state_reject(f->u, CREATED, &a, 412, "HTTP 412: Multiple resources",
                                             "{\"resourceType\":\"OperationOutcome\"}", "[{\"fullUrl\":\"urn:uuid:x\"}]", 100), 0);
        assert_int_equal(uplink_state_reject(f->u, CREATED, &b, 422, "HTTP 422: profile", NULL, "[]", 110), 0);
        /* The same change refused again: one row, one more attempt. */
        assert_int_equal(uplink_state_reject(f->u, CREATED, &a, 412, "HTTP 412: again", NULL, "[]", 120), 0);
        assert_int_equal(uplink_state_is_rejected(f->u, CREATED, 7), 1);
        assert_int_equal(uplink_state_is_rejected(f->u, CREATED, 8), 0);
        assert_int_equal(uplink_state_is_rejected(f->u, CREATED + 1, 7), 0);   /* another store's seq 7 */
        assert_int_equal(uplink_state_get(f->u, &st), 0);
        assert_int_equal(st.rejected, 2);

        assert_int_equal(uplink_state_rejected_list(f->u, true, &list, &k), 0);
        assert_int_equal(k, 2);
        assert_int_equal(list[0].change.kind, CHANGE_SESSION);
        assert_string_equal(list[0].change.key, a.key);
        assert_int_equal(list[0].attempts, 2);
        assert_int_equal(list[0].at, 100);
        assert_int_equal(list[0].last_at, 120);
        assert_string_equal(list[0].diagnostics, "HTTP 412: again");
        assert_null(list[0].outcome);
        assert_int_equal(list[1].change.kind, CHANGE_RUN);
        assert_int_equal(list[1].change.rev, 2);
        assert_int_equal(list[1].http_status, 422);
        uplink_rejected_free(list, k);

        /* Marked to go again: the oldest first; refused again, it stays, unmarked. */
        assert_int_equal(uplink_state_next_retry(f->u, &next), -ENOENT);
        assert_int_equal(uplink_state_retry_rejected(f->u, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(uplink_state_next_retry(f->u, &next), 0);
        assert_int_equal(next.change.seq, 7);
        assert_true(next.retry);
        assert_int_equal(uplink_state_retry_refused(f->u, next.id, 412, "HTTP 412: still", NULL, 130), 0);
        free(next.outcome);
        free(next.payload);
        assert_int_equal(uplink_state_next_retry(f->u, &next), 0);
        assert_int_equal(next.change.seq, 9);
        free(next.outcome);
        free(next.payload);

        /* The run went through: delivered, no longer counted, still listed. */
        assert_int_equal(uplink_state_delivered(f->u, CREATED, CHANGE_RUN, "3", 140), 0);
        assert_int_equal(uplink_state_next_retry(f->u, &next), -ENOENT);
        assert_int_equal(uplink_state_get(f->u, &st), 0);
        assert_int_equal(st.rejected, 1);
        assert_int_equal(uplink_state_rejected_list(f->u, false, &list, &k), 0);
        assert_int_equal(k, 2);
        assert_int_equal(list[0].attempts, 3);
        assert_int_equal(list[1].delivered_at, 140);
        uplink_rejected_free(list, k);

        /* A reader (kneewrapd, kneewrapctl) gets the count from the state alone. */
        assert_int_equal(uplink_state_open(f->path, true, &ro, NULL), 0);
        assert_int_equal(uplink_state_get(ro, &st), 0);
        assert_int_equal(st.rejected, 1);
        uplink_state_close(ro);
        /* Without the refusals' file (an uplink from before them): nothing to list. */
        assert_int_equal(unlink(file), 0);
        assert_int_equal(uplink_state_open(f->path, true, &ro, NULL), 0);
        assert_int_equal(uplink_state_rejected_list(ro, false, &list, &k), 0);
        assert_int_equal(k, 0);
        uplink_state_close(ro);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_refused_kept_counted_retried_delivered, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
