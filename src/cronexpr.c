/* cronexpr.c — cron expressions: the parser (client input: strict, bounded, every error
 * names its field) and the next tick in a time zone (cronexpr.h states the rules).
 *
 * The next tick is found interval by interval: between two offset changes of the zone the
 * wall clock runs straight, so the next matching wall time (pure calendar arithmetic,
 * next_wall) minus the offset is the answer if it falls before the interval ends. At an
 * interval's start a spring-forward gap is checked (a matching wall time inside it fires
 * at the change), and wall times repeated after a fall-back are skipped unless the hour
 * field is '*'. */
#include "cronexpr.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MIN_INT(a, b) ((int)((a) < (b) ? (a) : (b)))

#define TEN_YEARS (10LL * 366 * 86400)

/* ---- parsing ---- */

typedef struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] is value lo_name + i */
    int names_lo;
} field;

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const field fields[6] = {
    {"second", 0, 59, NULL, 0},     {"minute", 0, 59, NULL, 0},   {"hour", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0}, {"month", 1, 12, months, 1}, {"day-of-week", 0, 7, days, 0},
};

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

/* A number or a name at *p (up to end): its value, or -1 (*p unmoved). */
static int value(const field *f, const char **p, const char *end) {
    const char *s = *p;
    if (s < end && *s >= '0' && *s <= '9') {
        int v = 0, d = 0;
        while (s < end && *s >= '0' && *s <= '9') {
            if (++d > 4)
                return -2; /* too long: reported as out of range */
            v = v * 10 + (*s++ - '0');
        }
        *p = s;
        return v;
    }
    if (f->names && end - s >= 3) {
        for (int i = 0; f->names[i]; i++) {
            if (lower(s[0]) == f->names[i][0] && lower(s[1]) == f->names[i][1] && lower(s[2]) == f->names[i][2] &&
                (end - s == 3 || !((lower(s[3]) >= 'a' && lower(s[3]) <= 'z')))) {
                *p = s + 3;
                return f->names_lo + i;
            }
        }
    }
    return -1;
}

/* One field's text [s, end) into a bit set; 0 or -1 with err set. */
static int parse_field(const field *f, const char *s, const char *end, uint64_t *bits, uint8_t *star, char *err,
                       size_t errlen) {
    *bits = 0;
    *star = s < end && *s == '*';
    const char *elem = s;
    while (elem <= end) {
        const char *e = memchr(elem, ',', (size_t)(end - elem));
        if (!e)
            e = end;
        const char *p = elem;
        int a, b, step = 1, ranged = 0;
        if (p == e) {
            snprintf(err, errlen, "%s field '%.*s': empty list element", f->name, (int)(end - s), s);
            return -1;
        }
        if (*p == '*') {
            a = f->lo, b = f->hi == 7 ? 6 : f->hi; /* '*' in day-of-week: 0-6 */
            p++;
            ranged = 1;
        } else {
            a = value(f, &p, e);
            if (a == -1)
                goto bad;
            b = a;
            if (p < e && *p == '-') {
                p++;
                b = value(f, &p, e);
                if (b == -1)
                    goto bad;
                ranged = 1;
            }
            for (int k = 0; k < 2; k++) {
                int v = k ? b : a;
                if (v < f->lo || v > f->hi) {
                    if (v == -2)
                        snprintf(err, errlen, "%s field '%.*s': number too long", f->name, (int)(end - s), s);
                    else
                        snprintf(err, errlen, "%s %d out of range %d-%d", f->name, v, f->lo, f->hi);
                    return -1;
                }
            }
            if (b < a) {
                snprintf(err, errlen, "%s range %d-%d is backwards", f->name, a, b);
                return -1;
            }
        }
        if (p < e && *p == '/') {
            p++;
            const char *q = p;
            step = value(&(field){f->name, 1, 1000, NULL, 0}, &p, e);
            if (step == -1 || q == p || step < 1 || step > f->hi) {
                snprintf(err, errlen, "%s field '%.*s': step must be a number 1-%d", f->name, (int)(end - s), s,
                         f->hi);
                return -1;
            }
            if (!ranged) /* a/n: from a to the end of the field */
                b = f->hi == 7 ? 6 : f->hi;
        }
        if (p != e)
            goto bad;
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << (f->hi == 7 && v == 7 ? 0 : v); /* day-of-week 7 is Sunday */
        elem = e + 1;
        continue;
    bad:
        snprintf(err, errlen, "%s field '%.*s' is not a cron field", f->name, (int)MIN_INT(end - s, 64), s);
        return -1;
    }
    return 0;
}

static const struct {
    const char *name, *expr;
} macros[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
              {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},     {"@midnight", "0 0 * * *"},
              {"@hourly", "0 * * * *"}};

int cron_parse(const char *s, size_t n, cron_spec *out, char *err, size_t errlen) {
    if (n > CRON_MAX_LEN) {
        snprintf(err, errlen, "longer than %d characters", CRON_MAX_LEN);
        return -1;
    }
    if (memchr(s, 0, n)) {
        snprintf(err, errlen, "contains a NUL byte");
        return -1;
    }
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n && s[0] == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++) {
            size_t len = strlen(macros[i].name);
            if (n == len && strncasecmp(s, macros[i].name, len) == 0)
                return cron_parse(macros[i].expr, strlen(macros[i].expr), out, err, errlen);
        }
        snprintf(err, errlen, "unknown macro '%.*s'", (int)MIN_INT(n, 32), s);
        return -1;
    }
    const char *fs[7], *fe[7];
    int nf = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] == ' ' || s[i] == '\t') {
            i++;
            continue;
        }
        if (s[i] < 0x21 || s[i] > 0x7e) {
            snprintf(err, errlen, "contains a character that is not printable ASCII");
            return -1;
        }
        size_t j = i;
        while (j < n && s[j] != ' ' && s[j] != '\t')
            j++;
        if (nf < 7) {
            fs[nf] = s + i;
            fe[nf] = s + j;
        }
        nf++;
        i = j;
    }
    if (nf != 5 && nf != 6) {
        snprintf(err, errlen, "expected 5 or 6 fields, got %d", nf);
        return -1;
    }
    cron_spec c;
    memset(&c, 0, sizeof c);
    uint64_t bits[6];
    uint8_t star[6];
    int first = nf == 5 ? 1 : 0;
    bits[0] = 1, star[0] = 0; /* five fields: second 0 */
    for (int k = first; k < 6; k++)
        if (parse_field(&fields[k], fs[k - first], fe[k - first], &bits[k], &star[k], err, errlen) < 0)
            return -1;
    c.sec = bits[0];
    c.min = bits[1];
    c.hour = (uint32_t)bits[2];
    c.mday = (uint32_t)bits[3];
    c.mon = (uint16_t)bits[4];
    c.wday = (uint8_t)bits[5];
    c.hour_star = star[2];
    c.dom_star = star[3];
    c.dow_star = star[5];
    *out = c;
    return 0;
}

/* ---- calendar ---- */

typedef struct wall {
    int64_t y;
    int mon, mday, hour, min, sec;
} wall;

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
static int month_len(int64_t y, int m) {
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return len[m - 1] + (m == 2 && is_leap(y));
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t floordiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static wall to_wall(int64_t w) {
    int64_t days = floordiv(w, 86400), secs = w - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    wall r;
    r.mday = (int)(doy - (153 * mp + 2) / 5 + 1);
    r.mon = (int)(mp < 10 ? mp + 3 : mp - 9);
    r.y = yoe + era * 400 + (r.mon <= 2);
    r.hour = (int)(secs / 3600);
    r.min = (int)(secs / 60 % 60);
    r.sec = (int)(secs % 60);
    return r;
}

static int64_t from_wall(const wall *r) {
    return days_from_civil(r->y, r->mon, r->mday) * 86400 + r->hour * 3600 + r->min * 60 + r->sec;
}

/* The first set bit at or after `from` (up to 63), or -1. */
static int next_bit(uint64_t bits, int from) {
    if (from > 63)
        return -1;
    uint64_t m = bits >> from;
    return m ? from + __builtin_ctzll(m) : -1;
}

static int day_matches(const cron_spec *c, const wall *r) {
    int wd = (int)((days_from_civil(r->y, r->mon, r->mday) % 7 + 7 + 4) % 7); /* 1970-01-01: Thursday */
    int dom = (c->mday >> r->mday) & 1, dow = (c->wday >> wd) & 1;
    return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

/* The first matching wall time (seconds, as if UTC) at or after w, up to limit; -1 if none. */
static int64_t next_wall(const cron_spec *c, int64_t w, int64_t limit) {
    wall r = to_wall(w);
    for (int guard = 0; guard < 100000; guard++) {
        if (from_wall(&r) > limit)
            return -1;
        if (!((c->mon >> r.mon) & 1)) {
            int m = next_bit(c->mon, r.mon + 1);
            if (m < 0 || m > 12)
                r.y++, r.mon = next_bit(c->mon, 1);
            else
                r.mon = m;
            r.mday = 1, r.hour = r.min = r.sec = 0;
            continue;
        }
        if (!day_matches(c, &r)) {
            r.hour = r.min = r.sec = 0;
            if (++r.mday > month_len(r.y, r.mon)) {
                r.mday = 1;
                if (++r.mon > 12)
                    r.mon = 1, r.y++;
            }
            continue;
        }
        int h = next_bit(c->hour, r.hour);
        if (h < 0 || h > 23) { /* no hour left today */
            r.hour = 23, r.min = 59, r.sec = 59;
            r = to_wall(from_wall(&r) + 1);
            continue;
        }
        if (h != r.hour)
            r.hour = h, r.min = r.sec = 0;
        int m = next_bit(c->min, r.min);
        if (m < 0 || m > 59) {
            r.min = 59, r.sec = 59;
            r = to_wall(from_wall(&r) + 1);
            continue;
        }
        if (m != r.min)
            r.min = m, r.sec = 0;
        int s = next_bit(c->sec, r.sec);
        if (s < 0 || s > 59) {
            r.sec = 59;
            r = to_wall(from_wall(&r) + 1);
            continue;
        }
        r.sec = s;
        int64_t W = from_wall(&r);
        return W <= limit ? W : -1;
    }
    return -1;
}

/* ---- ticks ---- */

static int32_t off_at(const tzone *z, int64_t t) { return z ? tz_offset(z, t) : 0; }

/* Is wall time W, reached at instant u, also reached earlier (a fall-back repeat)? */
static int repeated(const tzone *z, int64_t u, int64_t W) {
    int32_t before = off_at(z, u - 26 * 3600);
    int64_t u2 = W - before;
    return u2 < u && u2 + off_at(z, u2) == W;
}

int64_t cron_next(const cron_spec *c, const tzone *z, int64_t after) {
    int64_t limit = after + TEN_YEARS;
    int64_t t = after + 1;
    while (t <= limit) {
        int32_t off = off_at(z, t), prev = off_at(z, t - 1);
        int64_t T = z ? tz_next_change(z, t) : INT64_MAX;
        /* t is a spring-forward change: a wall time in the gap fires now (cronie). */
        if (prev < off) {
            int64_t W = next_wall(c, t + prev, t + off - 1);
            if (W >= 0)
                return t;
        }
        int64_t w = t + off;
        for (;;) {
            int64_t W = next_wall(c, w, limit + off);
            if (W < 0)
                return -1;
            int64_t u = W - off;
            if (u >= T)
                break;
            if (!c->hour_star && repeated(z, u, W)) {
                w = W + 1;
                continue;
            }
            return u;
        }
        t = T;
    }
    return -1;
}

int64_t cron_last_between(const cron_spec *c, const tzone *z, int64_t after, int64_t now) {
    if (now <= after)
        return -1;
    for (int k = 0; k < 40; k++) {
        int64_t lo = now - (1LL << k);
        if (lo < after)
            lo = after;
        int64_t x = cron_next(c, z, lo);
        if (x >= 0 && x <= now) {
            for (int guard = 0; guard < 1000000; guard++) {
                int64_t nx = cron_next(c, z, x);
                if (nx < 0 || nx > now)
                    break;
                x = nx;
            }
            return x;
        }
        if (lo == after)
            return -1;
    }
    return -1;
}
