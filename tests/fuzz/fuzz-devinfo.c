/* fuzz-devinfo: the wrap's Device Information strings, which go into JSON for Home Assistant. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char out[64];
        size_t n, cap;
        json_t *j;

        if (size < 1)
                return 0;
        /* The first byte picks the buffer size, so every cut point is reached. */
        cap = 1 + data[0] % sizeof out;
        n = wire_info_string(data + 1, size - 1, out, cap);
        CHECK(n < cap && out[n] == 0 && strlen(out) == n);
        /* Whatever came over the air, it is a JSON string (jansson checks UTF-8 strictly). */
        j = json_stringn(out, n);
        CHECK(j);
        json_decref(j);
        for (size_t i = 0; i < n; i++)
                CHECK((unsigned char) out[i] >= 0x20 && out[i] != 0x7f);
        return 0;
}
