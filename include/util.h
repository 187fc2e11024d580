/* util: small helpers shared by every module. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))

static inline void freep(void *p) { free(*(void **) p); }
#define _cleanup_free_ _cleanup_(freep)

static inline bool streq(const char *a, const char *b) { return strcmp(a, b) == 0; }
static inline bool streq_ptr(const char *a, const char *b) {
        return a == b || (a && b && strcmp(a, b) == 0);
}

/* Little-endian loads and stores, byte by byte: no unaligned access on any target. */
static inline uint16_t le16_get(const uint8_t *p) { return (uint16_t) (p[0] | (p[1] << 8)); }
static inline uint32_t le32_get(const uint8_t *p) {
        return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}
static inline void le16_put(uint8_t *p, uint16_t v) { p[0] = (uint8_t) v; p[1] = (uint8_t) (v >> 8); }
static inline void le32_put(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) v; p[1] = (uint8_t) (v >> 8); p[2] = (uint8_t) (v >> 16); p[3] = (uint8_t) (v >> 24);
}

/*
 * The real CLOCK_MONOTONIC in µs. KNEEWRAP_TIME_SCALE does not apply (clock.h has the scaled
 * clocks): the radio, the broker and a disk run in real time, and so do latencies.
 */
uint64_t mono_usec(void);

/* Random bits for jitter and delays (getrandom, never blocking; the clock when it cannot). */
uint64_t random_u64(void);

/*
 * The one backoff: the wait before attempt n+1 after n failures, min_usec doubling up to
 * max_usec, with ±20 % jitter from `random` (so that wraps or gateways that failed together
 * do not retry in lockstep), never below min_usec.
 */
uint64_t backoff_usec(unsigned failures, uint64_t min_usec, uint64_t max_usec, uint64_t random);

/* A random (version 4) UUID in its 36-character text form. Returns 0 or -errno. */
#define UUID_STR_MAX 37
int uuid_generate_str(char buf[static UUID_STR_MAX]);

/* The gateway's stable id for a wrap, from its address: "AA:BB:CC:00:11:22" -> "wrap_aabbcc001122". */
#define WRAP_ID_MAX 32
int wrap_id_from_address(const char *address, char buf[static WRAP_ID_MAX]);

/* Checks and normalises a Bluetooth address to "AA:BB:CC:DD:EE:FF". Returns 0 or -EINVAL. */
#define BDADDR_STR_MAX 18
int bdaddr_normalize(const char *in, char buf[static BDADDR_STR_MAX]);

/* Reads a whole small file (a secret, say), stripping one trailing newline. */
int read_small_file(const char *path, size_t max, char **ret);

/* Saturating parse helpers. Return 0 or -EINVAL / -ERANGE; never partially parse. */
int parse_int64(const char *s, int64_t *ret);
int parse_bool(const char *s, bool *ret);
int parse_decimal_centi(const char *s, int32_t *ret); /* "10", "10.5", "-3.25" -> hundredths */
