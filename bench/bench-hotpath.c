/* bench-hotpath: the in-process cost of one button press's START decision, with and without the store's commit. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "payload.h"
#include "record.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "wire.h"

/*
 * The daemon's path from a Button Event notification to the Control Point bytes is:
 * decode the button, read the wrap's rules state from the store, decide, commit the open
 * session record before acting, encode START (src/daemon/wrap.c, request_start()). BlueZ and D-Bus are not
 * in it; bench-e2e measures those. Each variant below drops one part, so the table shows
 * where the time goes; the fsync probe shows what the disk alone costs per commit.
 */

#define WRAP_ADDRESS "AA:BB:CC:00:11:22"
#define WARMUP 50

typedef enum Variant {
        V_DECIDE,       /* decode + decide + record + payload + encode: the state already in memory */
        V_READ,         /* + store_rules_state (a read), no write */
        V_OPEN,         /* + store_session_put of the open record alone: wrap.c's path */
        V_FULL,         /* + its outbox row from payload_session_msg, in the same transaction */
        _V_MAX,
} Variant;

static const char *const variant_name[_V_MAX] = {
        [V_DECIDE] = "decide only, no store",
        [V_READ] = "+ store read, no write",
        [V_OPEN] = "+ write open record (FULL)",
        [V_FULL] = "+ with outbox row (FULL)",
};

static uint64_t now_nsec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

typedef struct Stats {
        uint64_t p50, p99, max, mean;
        size_t over_1ms;          /* presses that took 1 ms or more */
        uint32_t wal_resets;      /* WAL restarts after a checkpoint during the run */
} Stats;

/* Nearest-rank percentiles over sorted samples. */
static Stats stats_of(uint64_t *v, size_t n) {
        Stats s = { 0 };
        uint64_t sum = 0;

        qsort(v, n, sizeof *v, cmp_u64);
        for (size_t i = 0; i < n; i++) {
                sum += v[i];
                if (v[i] >= 1000000)
                        s.over_1ms++;
        }
        s.p50 = v[(n * 50 + 99) / 100 - 1];
        s.p99 = v[(n * 99 + 99) / 100 - 1];
        s.max = v[n - 1];
        s.mean = sum / n;
        return s;
}

/* The filesystem a directory lives on, from /proc/self/mountinfo: the longest mount point
 * that prefixes the directory's real path. */
static void fs_of(const char *dir, char *fstype, size_t ft_size, char *source, size_t src_size) {
        char real[PATH_MAX], line[4096], best_mp[PATH_MAX] = "";
        FILE *f;

        snprintf(fstype, ft_size, "?");
        snprintf(source, src_size, "?");
        if (!realpath(dir, real))
                return;
        f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return;
        while (fgets(line, sizeof line, f)) {
                char mp[PATH_MAX], ft[64], src[256];
                const char *dash;
                size_t l;

                if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
                        continue;
                dash = strstr(line, " - ");
                if (!dash || sscanf(dash + 3, "%63s %255s", ft, src) != 2)
                        continue;
                l = strlen(mp);
                if (strncmp(real, mp, l) != 0 || (real[l] != '/' && real[l] != 0 && l != 1))
                        continue;
                if (l >= strlen(best_mp)) {
                        snprintf(best_mp, sizeof best_mp, "%s", mp);
                        snprintf(fstype, ft_size, "%s", ft);
                        snprintf(source, src_size, "%s", src);
                }
        }
        fclose(f);
}

/* The WAL header's checkpoint sequence number (big-endian, offset 12): it grows each time
 * SQLite restarts the WAL after a checkpoint, so its growth over a run counts checkpoints. */
static int wal_ckpt_seq(const char *db, uint32_t *ret) {
        char path[PATH_MAX];
        uint8_t h[16];
        int fd;
        ssize_t n;

        if (snprintf(path, sizeof path, "%s-wal", db) >= (int) sizeof path)
                return -ENAMETOOLONG;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = pread(fd, h, sizeof h, 0);
        close(fd);
        if (n != (ssize_t) sizeof h)
                return -EIO;
        *ret = (uint32_t) h[12] << 24 | (uint32_t) h[13] << 16 | (uint32_t) h[14] << 8 | h[15];
        return 0;
}

typedef struct Bench {
        Config config;
        Store *store;
        RulesState cached;      /* V_DECIDE's state: read once, as a cache would hold it */
        char wrap[WRAP_ID_MAX];
        char db[PATH_MAX];
        int64_t now;
        uint8_t seq;
} Bench;

/* One press, timed from the notification's bytes to the Control Point's bytes. */
static int press(Bench *b, Variant v, uint64_t *ret_nsec) {
        uint8_t raw[2], cp[WIRE_CP_MAX_SIZE];
        const char *why = NULL;
        WireButton button;
        RulesState state;
        RulesDecision d;
        RulesEvent ev = { .type = RULES_EVENT_START };
        SessionRecord rec = { .outcome = OUTCOME_OPEN };
        OutboxMsg msg = { 0 };
        WireRequest req = { 0 };
        uint64_t t0, t1;
        int r;

        /* Heat with no injury: always allowed (R2/R3), so every press is a START. */
        wire_button_encode(&(WireButton) { .event = WIRE_BUTTON_HEAT, .seq = b->seq++ }, raw);
        b->now += 60;

        t0 = now_nsec();
        r = wire_button_decode(raw, sizeof raw, &button, &why);
        if (r < 0)
                return r;
        if (v == V_DECIDE)
                state = b->cached;
        else {
                r = store_rules_state(b->store, b->wrap, &b->config.therapy, &state);
                if (r < 0)
                        return r;
        }
        ev.mode = button.event == WIRE_BUTTON_COLD ? THERAPY_COLD : THERAPY_HEAT;
        d = rules_decide(&state, &ev, b->now);
        if (d.action != RULES_START)
                return -EPROTO;

        r = uuid_generate_str(rec.session_id);
        if (r < 0)
                return r;
        memcpy(rec.wrap, b->wrap, sizeof rec.wrap);
        rec.mode = d.mode;
        rec.source = SOURCE_BUTTON;
        rec.requested_at = b->now;
        rec.prescribed_s = d.duration_s;
        rec.setpoint = d.setpoint;
        /* wrap.c publishes only finished records; the brief's path also queues the message. */
        if (v != V_OPEN) {
                r = payload_session_msg(&b->config, &rec, &msg);
                if (r < 0)
                        return r;
        }
        if (v >= V_OPEN) {
                r = store_session_put(b->store, &rec, v == V_FULL ? &msg : NULL);
                if (r < 0) {
                        outbox_msg_done(&msg);
                        return r;
                }
        }
        outbox_msg_done(&msg);

        req.opcode = WIRE_OP_START;
        req.mode = (uint8_t) d.mode;
        req.setpoint = (int16_t) d.setpoint;
        req.duration_s = (uint16_t) d.duration_s;
        if (wire_request_encode(&req, cp) == 0)
                return -EINVAL;
        t1 = now_nsec();

        *ret_nsec = t1 - t0;
        return 0;
}

static int bench_open(Bench *b, const char *dir) {
        int r;

        if (snprintf(b->db, sizeof b->db, "%s/kneewrap.db", dir) >= (int) sizeof b->db)
                return -ENAMETOOLONG;
        r = store_open(b->db, &b->store);
        if (r < 0) {
                fprintf(stderr, "store_open %s: %s\n", b->db, strerror(-r));
                return r;
        }
        r = store_wrap_add(b->store, WRAP_ADDRESS, "bench", b->now);
        if (r < 0 && r != -EEXIST) {
                fprintf(stderr, "store_wrap_add: %s\n", store_errmsg(b->store));
                return r;
        }
        r = wrap_id_from_address(WRAP_ADDRESS, b->wrap);
        if (r < 0)
                return r;
        return store_rules_state(b->store, b->wrap, &b->config.therapy, &b->cached);
}

static int run(Bench *b, Variant v, unsigned n, Stats *ret) {
        uint64_t *t = calloc(n, sizeof *t), dummy;
        uint32_t seq0 = 0, seq1 = 0;
        int r = 0;

        if (!t)
                return -ENOMEM;
        for (unsigned i = 0; i < WARMUP && r >= 0; i++)
                r = press(b, v, &dummy);
        (void) wal_ckpt_seq(b->db, &seq0);
        for (unsigned i = 0; i < n && r >= 0; i++)
                r = press(b, v, &t[i]);
        (void) wal_ckpt_seq(b->db, &seq1);
        if (r >= 0) {
                *ret = stats_of(t, n);
                ret->wal_resets = seq1 - seq0;
        }
        else
                fprintf(stderr, "press (%s): %s (%s)\n", variant_name[v], strerror(-r),
                        b->store ? store_errmsg(b->store) : "");
        free(t);
        return r;
}

/* What one durable commit costs the disk alone: a 4 KiB append and fdatasync(). */
static int fsync_probe(const char *dir, unsigned n, Stats *ret) {
        char path[PATH_MAX], block[4096];
        uint64_t *t = calloc(n, sizeof *t);
        int fd, r = 0;

        if (!t)
                return -ENOMEM;
        memset(block, 0x5a, sizeof block);
        if (snprintf(path, sizeof path, "%s/fsync-probe", dir) >= (int) sizeof path) {
                free(t);
                return -ENAMETOOLONG;
        }
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                free(t);
                return -errno;
        }
        for (unsigned i = 0; i < n; i++) {
                uint64_t t0 = now_nsec();
                if (write(fd, block, sizeof block) != (ssize_t) sizeof block || fdatasync(fd) < 0) {
                        r = -errno;
                        break;
                }
                t[i] = now_nsec() - t0;
        }
        close(fd);
        unlink(path);
        if (r >= 0)
                *ret = stats_of(t, n);
        free(t);
        return r;
}

static void row(const char *what, const char *where, const Stats *s, bool wal) {
        printf("  %-27s %-22s %9.1f %9.1f %9.1f %9.1f %6zu", what, where,
               s->p50 / 1000.0, s->p99 / 1000.0, s->max / 1000.0, s->mean / 1000.0, s->over_1ms);
        if (wal)
                printf(" %6" PRIu32, s->wal_resets);
        printf("\n");
}

static void summary(const char *key, double value, const char *unit, const char *target) {
        const char *p = getenv("KW_BENCH_SUMMARY");
        FILE *f;

        if (!p || !*p)
                return;
        f = fopen(p, "ae");
        if (!f)
                return;
        fprintf(f, "%s\t%.1f\t%s\t%s\n", key, value, unit, target);
        fclose(f);
}

static void rmtree_db(const char *dir) {
        static const char *const files[] = { "kneewrap.db", "kneewrap.db-wal", "kneewrap.db-shm" };
        char p[PATH_MAX];

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                if (snprintf(p, sizeof p, "%s/%s", dir, files[i]) < (int) sizeof p)
                        (void) unlink(p);
        }
        rmdir(dir);
}

/* /proc/pressure/<kind>'s "some avg60": how contended the machine was while we ran. */
static int psi_avg60(const char *kind, double *ret) {
        char path[64], line[256];
        const char *p;
        FILE *f;

        snprintf(path, sizeof path, "/proc/pressure/%s", kind);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        p = fgets(line, sizeof line, f) ? strstr(line, "avg60=") : NULL;
        fclose(f);
        if (!p)
                return -EIO;
        *ret = strtod(p + 6, NULL);
        return 0;
}

static void help(void) {
        printf("Usage: bench-hotpath [-n PRESSES] [-d DIR]...\n"
               "Times the button -> START decision path per press (p50/p99/max, microseconds).\n"
               "  -n PRESSES  timed presses per variant (default 2000; %d untimed first)\n"
               "  -d DIR      put a store under DIR (repeatable; default: $TMPDIR or /tmp, and /dev/shm)\n",
               WARMUP);
}

int main(int argc, char *argv[]) {
        const char *dirs[8];
        unsigned n = 2000, n_dirs = 0;
        Stats s = { 0 };
        int c, r;

        while ((c = getopt(argc, argv, "hn:d:")) >= 0)
                switch (c) {
                case 'n':
                        n = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        if (n_dirs < ELEMENTSOF(dirs))
                                dirs[n_dirs++] = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        if (n == 0)
                n = 1;
        if (n_dirs == 0) {
                const char *tmp = getenv("TMPDIR");
                dirs[n_dirs++] = tmp && *tmp ? tmp : "/tmp";
                if (access("/dev/shm", W_OK) == 0)
                        dirs[n_dirs++] = "/dev/shm";
        }

        {
                double load[3] = { 0 }, cpu = -1, io = -1;
                (void) getloadavg(load, 3);
                (void) psi_avg60("cpu", &cpu);
                (void) psi_avg60("io", &io);
                printf("bench-hotpath: button -> START in process, %u presses per row (+%d warm-up), microseconds\n"
                       "  (load %.2f %.2f %.2f, pressure cpu %.0f%% io %.0f%% avg60)\n",
                       n, WARMUP, load[0], load[1], load[2], cpu, io);
        }
        printf("  %-27s %-22s %9s %9s %9s %9s %6s %6s\n", "path", "store on", "p50", "p99", "max", "mean", ">=1ms", "ckpts");

        for (unsigned i = 0; i < n_dirs; i++) {
                char tmpl[PATH_MAX], fstype[64], source[256], where[96];
                Bench b = { .now = 1795000000, .seq = 0 };

                if (snprintf(tmpl, sizeof tmpl, "%s/kw-bench-XXXXXX", dirs[i]) >= (int) sizeof tmpl ||
                    !mkdtemp(tmpl)) {
                        fprintf(stderr, "mkdtemp %s: %s\n", tmpl, strerror(errno));
                        return 1;
                }
                fs_of(tmpl, fstype, sizeof fstype, source, sizeof source);
                if (snprintf(where, sizeof where, "%s (%s)", fstype, source) >= (int) sizeof where)
                        snprintf(where, sizeof where, "%s", fstype);
                config_init(&b.config);
                r = bench_open(&b, tmpl);
                for (Variant v = i == 0 ? V_DECIDE : V_READ; r >= 0 && v < _V_MAX; v++) {
                        r = run(&b, v, n, &s);
                        if (r < 0)
                                break;
                        row(variant_name[v], v == V_DECIDE ? "-" : where, &s, v >= V_OPEN);
                        if (v == V_OPEN && i == 0) {
                                summary("hotpath_p99_us", s.p99 / 1000.0, "us", "< 5000");
                                summary("hotpath_p50_us", s.p50 / 1000.0, "us", "");
                        }
                }
                if (r >= 0 && fsync_probe(tmpl, n < 500 ? n : 500, &s) >= 0)
                        row("(disk: 4 KiB fdatasync)", where, &s, false);
                b.store = store_close(b.store);
                config_done(&b.config);
                rmtree_db(tmpl);
                if (r < 0)
                        return 1;
        }
        printf("  Store rows read the rules state from the store at every press, as wrap.c does, and commit\n"
               "  the open record before START is encoded (the daemon's path: \"write open record\"); the\n"
               "  outbox row is what a finished record adds. \"decide only\" builds the JSON payload but\n"
               "  keeps the state in memory. The fdatasync row is the disk alone. ckpts: WAL checkpoints\n"
               "  during the row (SQLite's automatic one every 1000 WAL pages fsyncs the database file too).\n");
        return 0;
}
