/* replay: runs a fuzz target's LLVMFuzzerTestOneInput on every file of its seed corpus,
 * without libFuzzer, so that every build runs each decoder on its seeds: the cross builds
 * under qemu-user too, where alignment, byte order and the width of time_t differ. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path, size_t *n) {
        FILE *f = fopen(path, "rbe");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;

        if (!f) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -1;
        }
        for (;;) {
                size_t got;

                if (len == cap) {
                        uint8_t *b = realloc(buf, cap ? cap * 2 : 4096);
                        if (!b) {
                                free(buf);
                                fclose(f);
                                return -1;
                        }
                        buf = b;
                        cap = cap ? cap * 2 : 4096;
                }
                got = fread(buf + len, 1, cap - len, f);
                len += got;
                if (got == 0)
                        break;
        }
        fclose(f);
        /* Exactly `len` bytes, so that ASan sees a read one past the input. */
        {
                uint8_t *exact = realloc(buf, len ? len : 1);
                if (exact)
                        buf = exact;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        (*n)++;
        return 0;
}

int main(int argc, char **argv) {
        size_t n = 0;

        for (int i = 1; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                struct dirent *de;

                if (!d) {
                        if (replay_file(argv[i], &n) < 0)
                                return 1;
                        continue;
                }
                while ((de = readdir(d))) {
                        char path[4096];

                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
                        if (replay_file(path, &n) < 0) {
                                closedir(d);
                                return 1;
                        }
                }
                closedir(d);
        }
        if (n == 0) {
                fprintf(stderr, "replay: no seeds found\n");
                return 1;
        }
        printf("replay: %zu seeds, no crash\n", n);
        return 0;
}
