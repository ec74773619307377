/* mgmt.c — what every management command shares: options, the broker URL, HTTP calls.
 *
 * The HTTP client is libcurl (a well-kept library: keep-alive, timeouts, IPv6, TLS for
 * https:// URLs), the JSON library jansson. A command calls mgmt_init() with its own option
 * table, then mgmt_call() per request; mgmt_call() turns every way a request can go wrong
 * into one line on stderr and the exit code the README promises (1 the broker said no,
 * 3 it could not be reached), so the commands themselves only deal with replies. */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

#define DEFAULT_URL "http://guest:guest@127.0.0.1:15672"
#define DEFAULT_HTTP_PORT 15672
#define MAX_REPLY (256u << 20) /* a reply larger than this is refused, not buffered */

int mgmt_usage_error(const mgmt *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ferry %s: ", m->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see ferry %s --help)\n", m->cmd);
    va_end(ap);
    return MG_USAGE;
}

int mgmt_fail(mgmt *m, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (m->quiet) {
        vsnprintf(m->last_err, sizeof m->last_err, fmt, ap);
        va_end(ap);
        return code;
    }
    fprintf(stderr, "ferry %s: ", m->cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/* Parses a whole number within [min, max]; 0 or -1. */
static int parse_long(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Stores one option's value; MG_USAGE (printed) if it does not parse. */
static int set_opt(mgmt *m, const mopt *o, const char *val) {
    switch (o->kind) {
    case MO_STR: *(const char **)o->dst = val; return 0;
    case MO_LONG:
        if (parse_long(val, o->min, o->max, (long *)o->dst) < 0)
            return mgmt_usage_error(m, "%s expects a whole number from %ld to %ld, got '%s'", o->name, o->min,
                                    o->max, val);
        return 0;
    case MO_DUR_MS: {
        long ms = parse_dur_ms(val);
        if (ms < 0 || ms < o->min || ms > o->max)
            return mgmt_usage_error(m, "%s expects a duration such as 250ms, 5s, 30m or 1h, got '%s'", o->name,
                                    val);
        *(long *)o->dst = ms;
        return 0;
    }
    case MO_DOUBLE: {
        char *end;
        errno = 0;
        double d = strtod(val, &end);
        if (!*val || *end || errno || d != d)
            return mgmt_usage_error(m, "%s expects a number, got '%s'", o->name, val);
        *(double *)o->dst = d;
        return 0;
    }
    }
    return 0;
}

/* Turns --url / FERRY_URL / the default into m->base, m->user, m->pass. MG_USAGE if bad. */
static int resolve_url(mgmt *m) {
    const char *src = m->url, *from = "--url";
    if (!src || !*src) {
        src = getenv("FERRY_URL");
        from = "FERRY_URL";
    }
    if (!src || !*src) {
        src = DEFAULT_URL;
        from = "the default URL";
    }
    CURLU *u = curl_url();
    if (!u)
        return mgmt_fail(m, MG_FAILED, "out of memory");
    int rc = MG_USAGE;
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL, *path = NULL;
    if (curl_url_set(u, CURLUPART_URL, src, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        mgmt_usage_error(m, "%s is not a URL such as http://user:pass@host:15672: '%s'", from, src);
        goto out;
    }
    int amqp = strcmp(scheme, "amqp") == 0 || strcmp(scheme, "amqps") == 0;
    if (!amqp && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        mgmt_usage_error(m, "%s must be http://, https://, amqp:// or amqps://, got '%s'", from, src);
        goto out;
    }
    long portnum = 0;
    if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK && port)
        portnum = atol(port);
    /* An AMQP URL names the broker, not its HTTP port: same user and host, port 15672. */
    if (amqp)
        portnum = DEFAULT_HTTP_PORT;
    if (m->http_port)
        portnum = m->http_port;
    if (portnum <= 0 || portnum > 65535) {
        mgmt_usage_error(m, "%s has no usable port: '%s'", from, src);
        goto out;
    }
    snprintf(m->user, sizeof m->user, "guest");
    snprintf(m->pass, sizeof m->pass, "guest");
    if (curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE) == CURLUE_OK && user) {
        snprintf(m->user, sizeof m->user, "%s", user);
        m->pass[0] = 0;
        if (curl_url_get(u, CURLUPART_PASSWORD, &pass, CURLU_URLDECODE) == CURLUE_OK && pass)
            snprintf(m->pass, sizeof m->pass, "%s", pass);
    }
    /* An http URL may carry a path prefix (a reverse proxy's /rabbitmq); an AMQP path is a vhost. */
    const char *prefix = "";
    if (!amqp && curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && path) {
        size_t len = strlen(path);
        while (len && path[len - 1] == '/')
            path[--len] = 0;
        prefix = path;
    }
    snprintf(m->base, sizeof m->base, "%s://%s:%ld%s", amqp ? "http" : scheme, host, portnum, prefix);
    rc = -1;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_free(pass);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

int mgmt_init(mgmt *m, int argc, char **argv, const mopt *opts, const char **pos, int minpos, int maxpos,
              int *npos) {
    *npos = 0;
    if (!m->timeout_ms)
        m->timeout_ms = 30000;
    static const mopt common[] = {{"--url", MO_STR, NULL, 0, 0},
                                  {"--http-port", MO_LONG, NULL, 1, 65535},
                                  {"--vhost", MO_STR, NULL, 0, 0},
                                  {"--json", MO_FLAG, NULL, 0, 0},
                                  {NULL, 0, NULL, 0, 0}};
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*npos >= maxpos)
                return mgmt_usage_error(m, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(m->usage, stdout);
            return MG_OK;
        }
        char flag[64];
        const char *eq = strchr(a, '=');
        size_t flen = eq ? (size_t)(eq - a) : strlen(a);
        if (flen >= sizeof flag)
            return mgmt_usage_error(m, "unknown option %.40s...", a);
        memcpy(flag, a, flen);
        flag[flen] = 0;
        const mopt *o = NULL;
        int is_common = 0;
        for (const mopt *c = opts; c && c->name && !o; c++)
            if (strcmp(c->name, flag) == 0)
                o = c;
        for (const mopt *c = common; !o && c->name; c++)
            if (strcmp(c->name, flag) == 0)
                o = c, is_common = 1;
        if (!o)
            return mgmt_usage_error(m, "unknown option %s", flag);
        if (o->kind == MO_FLAG) {
            if (eq)
                return mgmt_usage_error(m, "%s takes no value", flag);
            if (is_common)
                m->json = 1;
            else
                *(int *)o->dst = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val)
            return mgmt_usage_error(m, "%s needs a value", flag);
        if (is_common) {
            if (strcmp(flag, "--url") == 0)
                m->url = val;
            else if (strcmp(flag, "--vhost") == 0) {
                if (!*val)
                    return mgmt_usage_error(m, "--vhost needs a name");
                m->vhost = val;
            } else if (parse_long(val, 1, 65535, &m->http_port) < 0)
                return mgmt_usage_error(m, "--http-port expects a port from 1 to 65535, got '%s'", val);
            continue;
        }
        int rc = set_opt(m, o, val);
        if (rc)
            return rc;
    }
    if (*npos < minpos)
        return mgmt_usage_error(m, "missing argument");
    int rc = resolve_url(m);
    if (rc >= 0)
        return rc;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    m->curl = curl_easy_init();
    if (!m->curl)
        return mgmt_fail(m, MG_FAILED, "cannot start libcurl");
    return -1;
}

void mgmt_free(mgmt *m) {
    if (m->curl) {
        curl_easy_cleanup(m->curl);
        m->curl = NULL;
        curl_global_cleanup();
    }
}

const char *mgmt_vhost(const mgmt *m) { return m->vhost ? m->vhost : "/"; }

char *mgmt_esc(const char *s, char *out, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (; *s && j + 4 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~') {
            out[j++] = (char)c;
        } else {
            out[j++] = '%';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j] = 0;
    return out;
}

typedef struct reply {
    char *p;
    size_t n, cap;
    int too_big;
} reply;

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg) {
    reply *r = arg;
    size_t len = size * nmemb;
    if (r->n + len + 1 > MAX_REPLY) {
        r->too_big = 1;
        return 0;
    }
    if (r->n + len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (cap < r->n + len + 1)
            cap *= 2;
        char *p = realloc(r->p, cap);
        if (!p)
            return 0;
        r->p = p;
        r->cap = cap;
    }
    memcpy(r->p + r->n, data, len);
    r->n += len;
    r->p[r->n] = 0;
    return len;
}

int mgmt_call_quiet(mgmt *m, const char *method, const char *path, const char *body, size_t len, json_t **out,
                    long *status, char *err, size_t errn) {
    CURL *c = m->curl;
    reply r = {0};
    char url[4096], curlerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    if (out)
        *out = NULL;
    *status = 0;
    if (err && errn)
        err[0] = 0;
    snprintf(url, sizeof url, "%s%s", m->base, path);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERNAME, m->user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, m->pass);
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, m->timeout_ms < 5000 ? m->timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, m->timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "ferry-cli");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cr = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (cr != CURLE_OK) {
        if (r.too_big)
            mgmt_fail(m, MG_FAILED, "the reply to %s %s is larger than %u MiB", method, path, MAX_REPLY >> 20);
        else
            mgmt_fail(m, MG_UNREACHABLE, "cannot reach the broker at %s: %s", m->base,
                      curlerr[0] ? curlerr : curl_easy_strerror(cr));
        free(r.p);
        return r.too_big ? MG_FAILED : MG_UNREACHABLE;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    json_t *j = NULL;
    if (r.n) {
        json_error_t je;
        j = json_loadb(r.p, r.n, JSON_DECODE_ANY, &je);
    }
    if (*status >= 200 && *status < 300) {
        if (r.n && !j && out) {
            free(r.p);
            return mgmt_fail(m, MG_FAILED, "the broker's reply to %s %s is not JSON", method, path);
        }
        if (out)
            *out = j;
        else
            json_decref(j);
    } else if (err && errn) {
        /* RabbitMQ's error body: {"error": "...", "reason": "..."}. */
        const char *e = jstr(j, "error", NULL), *why = jstr(j, "reason", NULL);
        if (e && why && strcmp(e, why) != 0)
            snprintf(err, errn, "%s: %s", e, why);
        else if (e || why)
            snprintf(err, errn, "%s", e ? e : why);
        else if (r.n && !j)
            snprintf(err, errn, "%.200s", r.p);
        if (out)
            *out = j;
        else
            json_decref(j);
    } else {
        json_decref(j);
    }
    free(r.p);
    return MG_OK;
}

int mgmt_call(mgmt *m, const char *method, const char *path, json_t *body, json_t **out, long *status) {
    long st = 0;
    char err[512];
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return mgmt_fail(m, MG_FAILED, "cannot encode the request body");
    json_t *reply = NULL;
    int rc = mgmt_call_quiet(m, method, path, text, text ? strlen(text) : 0, out ? &reply : NULL, &st, err,
                             sizeof err);
    free(text);
    if (status)
        *status = st;
    if (rc != MG_OK)
        return rc;
    if (st >= 200 && st < 300) {
        if (out)
            *out = reply;
        return MG_OK;
    }
    json_decref(reply);
    if (out)
        *out = NULL;
    if (st == 401)
        return mgmt_fail(m, MG_FAILED, "%ld %s (check the user and password in --url or FERRY_URL)", st,
                         err[0] ? err : "not authorised");
    return mgmt_fail(m, MG_FAILED, "%s %s: %ld %s", method, path, st, err[0] ? err : "error");
}

void mgmt_print_json(const json_t *v) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

void mgmt_merge_ferry_queues(mgmt *m, json_t *queues) {
    long st = 0;
    json_t *extra = NULL;
    char err[256];
    int quiet = m->quiet;
    m->quiet = 1; /* a broker without /api/ferry (RabbitMQ) just has no such column */
    int rc = mgmt_call_quiet(m, "GET", "/api/ferry/queues", NULL, 0, &extra, &st, err, sizeof err);
    m->quiet = quiet;
    if (rc != MG_OK || st != 200 || !json_is_array(extra) || !json_is_array(queues)) {
        json_decref(extra);
        return;
    }
    static const char *const fields[] = {"oldest_message_age_seconds", "dead_lettered", "dead_lettered_total",
                                         "retries", "delayed_pending", NULL};
    /* Index by vhost + NUL-free separator + name: 10,000 queues must not cost 10,000^2. */
    json_t *by = json_object();
    size_t i;
    json_t *q, *e;
    char key[1024];
    json_array_foreach(extra, i, e) {
        snprintf(key, sizeof key, "%s\x01%s", jstr(e, "vhost", ""), jstr(e, "name", ""));
        json_object_set(by, key, e);
    }
    json_array_foreach(queues, i, q) {
        snprintf(key, sizeof key, "%s\x01%s", jstr(q, "vhost", ""), jstr(q, "name", ""));
        if (!(e = json_object_get(by, key)))
            continue;
        for (int k = 0; fields[k]; k++) {
            json_t *v = json_object_get(e, fields[k]);
            if (v && !json_object_get(q, fields[k]))
                json_object_set(q, fields[k], v);
        }
    }
    json_decref(by);
    json_decref(extra);
}
