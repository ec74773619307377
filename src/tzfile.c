/* tzfile.c — IANA zones as values: TZif files (RFC 8536) and POSIX TZ rules.
 *
 * A zone is its transition times with the offset each starts, plus the footer's POSIX rule
 * ("CET-1CEST,M3.5.0,M10.5.0/3") for every instant after the last transition, so a zone
 * file built "slim" (transitions only until the rule takes over) answers as a "fat" one.
 * Before the first transition the first local time type is in force (RFC 8536 3.2).
 * Zones with leap seconds ("right/…") are refused: cron ticks are POSIX seconds.
 * See tzfile.h for why this does not use localtime_r. */
#include "tzfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_TRANS 5000 /* real zones have a few hundred */

/* One POSIX rule date: Jn (julian, no Feb 29), n (zero-based day of year), Mm.w.d. */
typedef struct tzdate {
    char kind; /* 'J', 'N', 'M' */
    int a, b, c;
    int32_t secs; /* time of day of the change, local (may be negative or past 24h) */
} tzdate;

typedef struct tzrule {
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    tzdate start, end;
} tzrule;

struct tzone {
    size_t n;          /* transitions */
    int64_t *at;       /* transition instants, increasing */
    int32_t *off;      /* offset from at[i] on */
    int32_t first_off; /* before at[0] */
    int has_rule;
    tzrule rule;
};

void tz_free(tzone *z) {
    if (!z)
        return;
    free(z->at);
    free(z->off);
    free(z);
}

/* ---- POSIX TZ strings ---- */

static const char *parse_name(const char *s) {
    if (*s == '<') {
        const char *e = strchr(s, '>');
        return e && e - s >= 4 ? e + 1 : NULL;
    }
    const char *p = s;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] with hh up to max_h; returns the end or NULL. */
static const char *parse_hms(const char *s, int max_h, int32_t *out) {
    int sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (*s < '0' || *s > '9')
        return NULL;
    int32_t v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i) {
            if (*s != ':')
                break;
            s++;
            if (*s < '0' || *s > '9')
                return NULL;
        }
        int n = 0, d = 0;
        while (*s >= '0' && *s <= '9' && d < 3)
            n = n * 10 + (*s++ - '0'), d++;
        if (i && n > 59)
            return NULL;
        v[i] = n;
    }
    if (v[0] > max_h)
        return NULL;
    *out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return s;
}

static const char *parse_num(const char *s, int lo, int hi, int *out) {
    if (*s < '0' || *s > '9')
        return NULL;
    int n = 0;
    while (*s >= '0' && *s <= '9' && n <= hi)
        n = n * 10 + (*s++ - '0');
    if (n < lo || n > hi)
        return NULL;
    *out = n;
    return s;
}

static const char *parse_date(const char *s, tzdate *d) {
    d->secs = 7200; /* 02:00:00 by default (POSIX) */
    if (*s == 'J') {
        d->kind = 'J';
        s = parse_num(s + 1, 1, 365, &d->a);
    } else if (*s == 'M') {
        d->kind = 'M';
        s = parse_num(s + 1, 1, 12, &d->a);
        if (s && *s == '.')
            s = parse_num(s + 1, 1, 5, &d->b);
        else
            s = NULL;
        if (s && *s == '.')
            s = parse_num(s + 1, 0, 6, &d->c);
        else
            s = NULL;
    } else {
        d->kind = 'N';
        s = parse_num(s, 0, 365, &d->a);
    }
    if (s && *s == '/')
        s = parse_hms(s + 1, 167, &d->secs); /* RFC 8536 allows -167..167 hours */
    return s;
}

static int parse_rule(const char *s, tzrule *r) {
    memset(r, 0, sizeof *r);
    int32_t o;
    if (!(s = parse_name(s)) || !(s = parse_hms(s, 24, &o)))
        return -1;
    r->std_off = -o; /* POSIX counts west of Greenwich as positive */
    if (!*s)
        return 0;
    if (!(s = parse_name(s)))
        return -1;
    r->has_dst = 1;
    r->dst_off = r->std_off + 3600;
    if (*s && *s != ',') {
        if (!(s = parse_hms(s, 24, &o)))
            return -1;
        r->dst_off = -o;
    }
    if (!*s) { /* no rule: the US rule, as glibc assumes */
        r->start = (tzdate){'M', 3, 2, 0, 7200};
        r->end = (tzdate){'M', 11, 1, 0, 7200};
        return 0;
    }
    if (*s != ',' || !(s = parse_date(s + 1, &r->start)) || *s != ',' || !(s = parse_date(s + 1, &r->end)))
        return -1;
    return *s ? -1 : 0;
}

tzone *tz_posix(const char *s) {
    tzrule r;
    if (parse_rule(s, &r) < 0)
        return NULL;
    tzone *z = xcalloc(1, sizeof *z);
    z->has_rule = 1;
    z->rule = r;
    z->first_off = r.std_off;
    return z;
}

/* ---- calendar arithmetic (proleptic Gregorian, no time zone) ---- */

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Days from 1970-01-01 to y-m-d (m 1..12); Howard Hinnant's days_from_civil. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t year_of(int64_t t) {
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    /* civil_from_days, year only */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return mp >= 10 ? y + 1 : y;
}

static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* The day (days since the epoch) a rule date falls on in year y. */
static int64_t rule_day(const tzdate *d, int64_t y) {
    int64_t jan1 = days_from_civil(y, 1, 1);
    if (d->kind == 'J')
        return jan1 + d->a - 1 + (is_leap(y) && d->a >= 60);
    if (d->kind == 'N')
        return jan1 + d->a;
    int64_t first = days_from_civil(y, d->a, 1);
    int wday1 = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
    int day = 1 + (d->c - wday1 + 7) % 7 + (d->b - 1) * 7;
    int len = mdays[d->a - 1] + (d->a == 2 && is_leap(y));
    while (day > len)
        day -= 7;
    return first + day - 1;
}

static int32_t rule_offset(const tzrule *r, int64_t t) {
    if (!r->has_dst)
        return r->std_off;
    int64_t y = year_of(t + r->std_off);
    /* Look at the year before and after too: a change near New Year can fall in either. */
    for (int64_t yy = y + 1; yy >= y - 1; yy--) {
        /* The start is given in standard time, the end in daylight time. */
        int64_t start = rule_day(&r->start, yy) * 86400 + r->start.secs - r->std_off;
        int64_t end = rule_day(&r->end, yy) * 86400 + r->end.secs - r->dst_off;
        /* The latest change at or before t decides. */
        int64_t last = INT64_MIN;
        int dst = 0;
        if (start <= t && start > last)
            last = start, dst = 1;
        if (end <= t && end > last)
            last = end, dst = 0;
        if (last != INT64_MIN)
            return dst ? r->dst_off : r->std_off;
    }
    return r->std_off;
}

/* ---- TZif ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

tzone *tz_parse(const uint8_t *p, size_t n, char *err, size_t errlen) {
    const uint8_t *end = p + n;
    if (n < 44 || memcmp(p, "TZif", 4) != 0) {
        snprintf(err, errlen, "not a TZif file");
        return NULL;
    }
    int version = p[4];
    uint32_t c[6];
    for (int i = 0; i < 6; i++)
        c[i] = be32(p + 20 + 4 * i);
    /* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
    int tsize = 4;
    const uint8_t *d = p + 44;
    uint64_t len = (uint64_t)c[3] * 5 + (uint64_t)c[4] * 6 + c[5] + (uint64_t)c[2] * 8 + c[1] + c[0];
    if (version >= '2') { /* skip the 32-bit block: the 64-bit one follows with its own header */
        if (len + 44 > (uint64_t)(end - d)) {
            snprintf(err, errlen, "truncated TZif file");
            return NULL;
        }
        p = d + len;
        if (memcmp(p, "TZif", 4) != 0) {
            snprintf(err, errlen, "bad TZif second header");
            return NULL;
        }
        for (int i = 0; i < 6; i++)
            c[i] = be32(p + 20 + 4 * i);
        tsize = 8;
        d = p + 44;
        len = (uint64_t)c[3] * 9 + (uint64_t)c[4] * 6 + c[5] + (uint64_t)c[2] * 12 + c[1] + c[0];
    }
    if (c[2]) {
        snprintf(err, errlen, "zones with leap seconds are not supported");
        return NULL;
    }
    if (c[4] == 0 || c[4] > 256 || c[3] > MAX_TRANS || len > (uint64_t)(end - d)) {
        snprintf(err, errlen, "malformed TZif file");
        return NULL;
    }
    const uint8_t *tt = d, *idx = d + (size_t)c[3] * tsize, *types = idx + c[3];
    tzone *z = xcalloc(1, sizeof *z);
    z->n = c[3];
    z->at = xmalloc((z->n ? z->n : 1) * sizeof *z->at);
    z->off = xmalloc((z->n ? z->n : 1) * sizeof *z->off);
    for (size_t i = 0; i < z->n; i++) {
        z->at[i] = tsize == 8 ? be64(tt + 8 * i) : (int64_t)(int32_t)be32(tt + 4 * i);
        if (idx[i] >= c[4] || (i && z->at[i] <= z->at[i - 1])) {
            snprintf(err, errlen, "malformed TZif transitions");
            tz_free(z);
            return NULL;
        }
        z->off[i] = (int32_t)be32(types + 6 * idx[i]);
    }
    z->first_off = (int32_t)be32(types);
    if (version >= '2') { /* footer: "\n" TZ string "\n" */
        const uint8_t *f = d + len;
        if (f < end && *f == '\n') {
            const uint8_t *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
            if (nl && nl - f - 1 > 0 && nl - f - 1 < 128) {
                char s[128];
                memcpy(s, f + 1, (size_t)(nl - f - 1));
                s[nl - f - 1] = 0;
                if (parse_rule(s, &z->rule) == 0)
                    z->has_rule = 1;
            }
        }
    }
    for (size_t i = 0; i < z->n; i++) /* offsets beyond a day are not real zones */
        if (z->off[i] < -26 * 3600 || z->off[i] > 26 * 3600) {
            snprintf(err, errlen, "malformed TZif offsets");
            tz_free(z);
            return NULL;
        }
    return z;
}

/* IANA names: letters, digits, '_', '-', '+', '/', no "..", no leading '/'. */
static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 200 || s[0] == '/' || s[0] == '.' || strstr(s, ".."))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '-' || ch == '+' || ch == '/' || ch == '.'))
            return 0;
    }
    return 1;
}

/* Reads a whole (small) file: 0, or -errno. */
static int read_file(const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 4096, n = 0;
    uint8_t *p = xmalloc(cap);
    for (;;) {
        size_t got = fread(p + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        if (cap >= (2u << 20))
            break; /* bigger than any zone: tz_parse refuses it */
        cap *= 2;
        p = xrealloc(p, cap);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(p);
        return -EIO;
    }
    *data = p;
    *len = n;
    return 0;
}

tzone *tz_load(const char *name, char *err, size_t errlen) {
    if (!name[0] || strcmp(name, "UTC") == 0)
        return tz_posix("UTC0");
    if (!valid_name(name)) {
        snprintf(err, errlen, "not a time zone name");
        return NULL;
    }
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && dir[0] ? dir : "/usr/share/zoneinfo", name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_file(path, &data, &len) < 0) {
        snprintf(err, errlen, "unknown time zone");
        return NULL;
    }
    tzone *z = len > (1u << 20) ? NULL : tz_parse(data, len, err, errlen);
    if (len > (1u << 20))
        snprintf(err, errlen, "zone file too large");
    free(data);
    return z;
}

/* The first change of the rule after t. */
static int64_t rule_next_change(const tzrule *r, int64_t t) {
    if (!r->has_dst)
        return INT64_MAX;
    int64_t y = year_of(t + r->std_off), best = INT64_MAX;
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        int64_t start = rule_day(&r->start, yy) * 86400 + r->start.secs - r->std_off;
        int64_t end = rule_day(&r->end, yy) * 86400 + r->end.secs - r->dst_off;
        if (start > t && start < best)
            best = start;
        if (end > t && end < best)
            best = end;
    }
    return best;
}

int64_t tz_next_change(const tzone *z, int64_t t) {
    if (z->n && t < z->at[z->n - 1]) {
        size_t lo = 0, hi = z->n - 1; /* the first transition after t */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (z->at[mid] > t)
                hi = mid;
            else
                lo = mid + 1;
        }
        return z->at[lo];
    }
    return z->has_rule ? rule_next_change(&z->rule, t) : INT64_MAX;
}

int32_t tz_offset(const tzone *z, int64_t t) {
    if (!z->n || t < z->at[0])
        return z->n || !z->has_rule ? z->first_off : rule_offset(&z->rule, t);
    if (t >= z->at[z->n - 1] && z->has_rule)
        return rule_offset(&z->rule, t);
    size_t lo = 0, hi = z->n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (z->at[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->off[lo];
}
