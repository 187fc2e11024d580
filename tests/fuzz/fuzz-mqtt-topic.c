/* fuzz-mqtt-topic: routing of inbound MQTT topics (command_route) under any base topic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/mqtt/commands.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char buf[1024], name[COMMAND_NAME_MAX], rebuilt[1200];
        const char *base = "kneewrap", *prefix = "homeassistant", *topic;
        char *nl;
        TopicKind k;

        if (size >= sizeof buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = 0;
        /* "base\nprefix\ntopic" lets the base and prefix vary too; else the defaults. */
        topic = buf;
        if ((nl = strchr(buf, '\n'))) {
                char *nl2 = strchr(nl + 1, '\n');
                if (nl2) {
                        *nl = *nl2 = 0;
                        base = buf;
                        prefix = nl + 1;
                        topic = nl2 + 1;
                }
        }
        k = command_route(base, prefix, topic, name);
        CHECK(k == TOPIC_IGNORED || k == TOPIC_HA_STATUS || k == TOPIC_BRIDGE_REQUEST || k == TOPIC_WRAP_SET);
        CHECK(memchr(name, 0, sizeof name));
        if (k == TOPIC_BRIDGE_REQUEST || k == TOPIC_WRAP_SET) {
                /* The name is one level that may go into a response topic. */
                CHECK(name[0] && !strpbrk(name, "/+#"));
                if (k == TOPIC_WRAP_SET) {
                        CHECK(strlen(name) < WRAP_ID_MAX);
                        snprintf(rebuilt, sizeof rebuilt, "%s/%s/set", base, name);
                } else
                        snprintf(rebuilt, sizeof rebuilt, "%s/bridge/request/%s", base, name);
                CHECK(streq(rebuilt, topic));
        } else
                CHECK(name[0] == 0);
        return 0;
}
