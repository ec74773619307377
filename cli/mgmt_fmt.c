/* mgmt_fmt.c — how the management commands print: readable tables, durations, sizes, rates,
 * and reading values out of the API's JSON without a NULL check at every step.
 *
 * Tables size each column to its widest cell and right-align numbers, like `rabbitmqadmin`
 * and `ps`; a missing field prints as "-" rather than 0, so "no data" is never mistaken for
 * "zero". */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

#define MAX_CELL 64 /* longer cells (names, regexes) are cut with "..." */

const json_t *jpath(const json_t *o, const char *path) {
    char key[128];
    while (o && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        if (len >= sizeof key || !json_is_object(o))
            return NULL;
        memcpy(key, path, len);
        key[len] = 0;
        o = json_object_get(o, key);
        path += len + (dot ? 1 : 0);
    }
    return o;
}

double jnum(const json_t *o, const char *path, double dflt) {
    const json_t *v = jpath(o, path);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

const char *jstr(const json_t *o, const char *path, const char *dflt) {
    const json_t *v = jpath(o, path);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int jbool(const json_t *o, const char *path, int dflt) {
    const json_t *v = jpath(o, path);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

char *fmt_dur(double s, char *out, size_t n) {
    if (!(s >= 0) || isinf(s)) {
        snprintf(out, n, "-");
        return out;
    }
    if (s < 1)
        snprintf(out, n, "%.0fms", s * 1000);
    else if (s < 60)
        snprintf(out, n, "%.0fs", floor(s));
    else if (s < 3600) {
        long t = (long)s;
        if (t % 60)
            snprintf(out, n, "%ldm%lds", t / 60, t % 60);
        else
            snprintf(out, n, "%ldm", t / 60);
    } else if (s < 86400) {
        long t = (long)s / 60;
        if (t % 60)
            snprintf(out, n, "%ldh%ldm", t / 60, t % 60);
        else
            snprintf(out, n, "%ldh", t / 60);
    } else {
        long t = (long)s / 3600;
        if (t % 24)
            snprintf(out, n, "%ldd%ldh", t / 24, t % 24);
        else
            snprintf(out, n, "%ldd", t / 24);
    }
    return out;
}

long parse_dur_ms(const char *s) {
    char *end;
    errno = 0;
    if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '.'))
        return -1;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    double mult;
    if (!*end || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60e3;
    else if (strcmp(end, "h") == 0)
        mult = 3600e3;
    else if (strcmp(end, "d") == 0)
        mult = 86400e3;
    else
        return -1;
    double ms = v * mult;
    if (ms > 1e15)
        return -1;
    return (long)(ms + 0.5);
}

char *fmt_bytes(double b, char *out, size_t n) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    if (!(b >= 0)) {
        snprintf(out, n, "-");
        return out;
    }
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0 || b >= 100)
        snprintf(out, n, "%.0f %s", b, units[u]);
    else
        snprintf(out, n, "%.1f %s", b, units[u]);
    return out;
}

char *fmt_rate(double r, char *out, size_t n) {
    if (!(r >= 0))
        snprintf(out, n, "-");
    else if (r == 0)
        snprintf(out, n, "0");
    else if (r < 10)
        snprintf(out, n, "%.1f", r);
    else if (r < 10000)
        snprintf(out, n, "%.0f", r);
    else if (r < 1e7)
        snprintf(out, n, "%.1fk", r / 1000);
    else
        snprintf(out, n, "%.1fM", r / 1e6);
    return out;
}

char *fmt_count(const json_t *o, const char *path, char *out, size_t n) {
    const json_t *v = jpath(o, path);
    if (json_is_integer(v))
        snprintf(out, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, n, "%.0f", json_real_value(v));
    else
        snprintf(out, n, "-");
    return out;
}

struct table {
    int ncols;
    const char *const *heads;
    const char *align;
    char **cells; /* row-major, nrows * ncols */
    int nrows, cap, col;
};

table *table_new(const char *const *heads, const char *align) {
    table *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->heads = heads;
    t->align = align;
    while (heads[t->ncols])
        t->ncols++;
    return t;
}

void table_row(table *t) {
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cells = realloc(t->cells, (size_t)t->cap * (size_t)t->ncols * sizeof *t->cells);
        if (!t->cells)
            abort();
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[(size_t)t->nrows * (size_t)t->ncols + (size_t)i] = NULL;
    t->nrows++;
    t->col = 0;
}

void table_cell(table *t, const char *fmt, ...) {
    if (!t->nrows || t->col >= t->ncols)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* Control characters in names (a queue may be called anything) would break the layout. */
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (strlen(buf) > MAX_CELL)
        strcpy(buf + MAX_CELL - 3, "...");
    t->cells[(size_t)(t->nrows - 1) * (size_t)t->ncols + (size_t)t->col++] = strdup(buf);
}

int table_rows(const table *t) { return t->nrows; }

/* Display width of a UTF-8 string: continuation bytes take no column. */
static int width(const char *s) {
    int w = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void table_print(const table *t, FILE *f, int max_rows) {
    int rows = max_rows > 0 && max_rows < t->nrows ? max_rows : t->nrows;
    int w[32] = {0};
    for (int c = 0; c < t->ncols && c < 32; c++) {
        w[c] = width(t->heads[c]);
        for (int r = 0; r < rows; r++) {
            int cw = width(t->cells[(size_t)r * (size_t)t->ncols + (size_t)c]);
            if (cw > w[c])
                w[c] = cw;
        }
    }
    for (int r = -1; r < rows; r++) {
        for (int c = 0; c < t->ncols && c < 32; c++) {
            const char *s = r < 0 ? t->heads[c] : t->cells[(size_t)r * (size_t)t->ncols + (size_t)c];
            if (!s)
                s = "";
            int pad = w[c] - width(s);
            int last = c == t->ncols - 1;
            if (t->align[c] == 'r')
                fprintf(f, "%*s%s", pad, "", s);
            else if (last)
                fputs(s, f);
            else
                fprintf(f, "%s%*s", s, pad, "");
            if (!last)
                fputs("  ", f);
        }
        fputc('\n', f);
    }
}

void table_free(table *t) {
    if (!t)
        return;
    for (size_t i = 0; i < (size_t)t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}
