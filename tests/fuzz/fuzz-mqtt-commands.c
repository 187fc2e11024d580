/* fuzz-mqtt-commands: the MQTT command parser on arbitrary bytes, and the response it gives. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/mqtt/commands.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

/* The first byte picks the topic the payload came on: <wrap>/set or a bridge request. */
static const char *const requests[] = { NULL, "adopt", "remove", "prescription", "injury", "diary", "bogus" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char error[COMMAND_ERROR_MAX];
        const char *request;
        json_t *back;
        char *resp = NULL;
        Command c;
        int r;

        if (size < 1)
                return 0;
        request = requests[data[0] % ELEMENTSOF(requests)];
        r = command_parse(request, (const char *) data + 1, size - 1, &c, error);
        CHECK(r == 0 || r == -EINVAL);
        if (r < 0)
                CHECK(error[0] != 0 && memchr(error, 0, sizeof error));
        else {
                CHECK(c.diary.score <= 10 && c.diary.where < _WHERE_MAX && c.diary.flags < 16);
                CHECK(c.adopt_seconds <= 3600);
                CHECK(c.wrap[0] == 0 || (strlen(c.wrap) == 17 && strncmp(c.wrap, "wrap_", 5) == 0));
                CHECK(c.type != COMMAND_START || c.mode == THERAPY_COLD || c.mode == THERAPY_HEAT);
                CHECK(c.type != COMMAND_PRESCRIPTION || c.rx_set != 0);
        }
        CHECK(memchr(c.transaction, 0, sizeof c.transaction));

        /* Whatever came in, the answer is JSON that reads back, with the asker's transaction. */
        CHECK(command_response(&c, NULL, r < 0 ? error : NULL, &resp) == 0);
        back = json_loads(resp, 0, NULL);
        CHECK(back);
        CHECK(json_is_string(json_object_get(back, "status")));
        CHECK(!c.has_transaction || json_object_get(back, "transaction"));
        json_decref(back);
        free(resp);
        return 0;
}
