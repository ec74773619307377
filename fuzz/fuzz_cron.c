/* fuzz_cron.c — libFuzzer target for broker-held cron's client input: the x-ferry-cron
 * expression (cronexpr.c) and the zone code (tzfile.c) that x-ferry-timezone reaches.
 *
 * The first byte picks what the rest is: a cron expression (parsed; if it parses, its next
 * ticks in UTC and in Europe/Berlin must be increasing and after the start, and the
 * latest-tick search must agree with them), a POSIX TZ string, or TZif bytes (parsed; if
 * they parse, offsets and changes are asked for across the whole time range). Run with
 * `make fuzz` (FUZZ_TARGETS=fuzz_cron); a short smoke run is part of `make test`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cronexpr.h"
#include "tzfile.h"

static tzone *berlin;

static void check_ticks(const cron_spec *c, const tzone *z, int64_t from) {
    int64_t t = from;
    for (int i = 0; i < 4; i++) {
        int64_t n = cron_next(c, z, t);
        if (n < 0)
            return;
        if (n <= t)
            abort(); /* ticks must move forward */
        if (i == 0 && cron_last_between(c, z, from, n) != n)
            abort(); /* the latest tick up to the first one is that one */
        t = n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (!berlin) {
        char err[100];
        berlin = tz_load("Europe/Berlin", err, sizeof err);
    }
    uint8_t mode = data[0] % 3;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        cron_spec c;
        char err[300];
        if (cron_parse(s, n, &c, err, sizeof err) == 0) {
            check_ticks(&c, NULL, 1796256000);          /* 2026-12-03 */
            check_ticks(&c, berlin, 1792890000 - 7200); /* before the 2026-10-25 fall-back */
            check_ticks(&c, berlin, 1774746000 - 7200); /* before the 2026-03-29 spring-forward */
        } else if (!err[0]) {
            abort(); /* every refusal says why */
        }
    } else if (mode == 1) {
        char *str = malloc(n + 1);
        memcpy(str, s, n);
        str[n] = 0;
        tzone *z = tz_posix(str);
        if (z) {
            for (int64_t t = -4000000000LL; t < 8000000000LL; t += 86400 * 97)
                tz_offset(z, t);
            tz_next_change(z, 1796256000);
        }
        tz_free(z);
        free(str);
    } else {
        char err[100];
        tzone *z = tz_parse((const uint8_t *)s, n, err, sizeof err);
        if (z) {
            int64_t t = -5000000000LL;
            for (int i = 0; i < 200 && t < INT64_MAX / 2; i++) {
                tz_offset(z, t);
                int64_t c = tz_next_change(z, t);
                if (c <= t)
                    abort();
                t = c;
            }
        }
        tz_free(z);
    }
    return 0;
}
