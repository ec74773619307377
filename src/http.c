/* http.c — the management HTTP server: libmicrohttpd on its own thread (one daemon per
 * listen address), serving the API (/api/...), Prometheus metrics (/metrics) and the
 * dashboard's files (embedded at build time from web/, build/gen/web_assets.c).
 *
 * This thread never touches broker state: every API request becomes an mgmt_req posted to
 * the loop thread (mgmt_call), which answers with JSON built from its state. What is costly
 * and needs no state happens here: checking a PBKDF2 password (the loop hands over a copy of
 * the hash), sorting, filtering and paging lists, encoding JSON, writing the alerts file.
 *
 * RabbitMQ's management plugin is the model: basic auth, JSON error bodies
 * {"error": ..., "reason": ...}, 401/404/405/413 codes, and its pagination parameters. */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sched.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <netinet/in.h>

#include "auth.h"
#include "broker.h"
#include "http_int.h"
#include "mgmt.h"
#include "util.h"

#define MAX_BODY 20000000 /* RabbitMQ's management.http.max_body_size default */
#define MAX_PAGE_SIZE 500 /* RabbitMQ's limit on page_size */

typedef struct web_asset {
    const char *path;
    const unsigned char *data;
    size_t len;
} web_asset;
extern const web_asset web_assets[];
extern const size_t web_assets_count;

char http_alerts_path[600];
char http_amqp_host[64] = "127.0.0.1";
char http_node[128] = "ferry@localhost";
int http_amqp_port = 5672;
static struct MHD_Daemon *daemons[8];
static int ndaemons;

/* One HTTP request while its body arrives. */
typedef struct hctx {
    char *body;
    size_t len, cap;
    int too_big;
} hctx;

/* ---- answers ---- */

static const char *location; /* a Location header for the next answer (HTTP thread only) */

/* ---- gzip (what browsers, Prometheus and `curl --compressed` ask for, as RabbitMQ's
 * management listener answers it): a list of 10,000 queues is 18 MB of JSON and about 1 MB
 * gzipped, and moving the 18 MB over loopback ten times a second was itself what a
 * dashboard's polling cost the broker's latency on a 2-core machine (bench/http_cost.sh) ---- */

#define GZIP_MIN 1024 /* smaller answers are sent as they are */

/* Does the request's Accept-Encoding take gzip? "gzip" or "x-gzip" with a q above 0; else "*"
 * with a q above 0 (an explicit "gzip;q=0" refuses even beside "*", RFC 9110 12.5.3). */
static int accepts_gzip(struct MHD_Connection *c) {
    const char *ae = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept-Encoding");
    double gzip_q = -1.0, star_q = -1.0; /* -1: not named */
    for (const char *p = ae; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t n = (size_t)(p - tok);
        double q = 1.0;
        while (*p && *p != ',') { /* parameters: only q counts */
            if (*p == ';') {
                p++;
                while (*p == ' ' || *p == '\t')
                    p++;
                if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
                    q = strtod(p + 2, NULL);
            } else {
                p++;
            }
        }
        if ((n == 4 && strncasecmp(tok, "gzip", 4) == 0) || (n == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
            gzip_q = q;
        else if (n == 1 && *tok == '*')
            star_q = q;
    }
    return gzip_q >= 0.0 ? gzip_q > 0.0 : star_q > 0.0;
}

char *http_gzip(const char *data, size_t len, size_t *out_len) {
    if (len > UINT32_MAX) /* (zlib counts in 32 bits: sent plain) */
        return NULL;
    z_stream z;
    memset(&z, 0, sizeof z);
    /* level 1: JSON lists repeat their keys, so even the fastest level takes off ~95% */
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)len);
    char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* The headers every answer carries (RabbitMQ's Vary among them). */
static void add_headers(struct MHD_Response *resp, const char *ctype, int gzipped) {
    if (gzipped)
        MHD_add_response_header(resp, "Content-Encoding", "gzip");
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "Vary", "accept, accept-encoding, origin");
}

/* The response for data: gzipped when the client takes it and it is worth it. */
static struct MHD_Response *response_for(struct MHD_Connection *c, char *data, size_t len, int must_free,
                                         int *gzipped) {
    *gzipped = 0;
    if (len >= GZIP_MIN && accepts_gzip(c)) {
        size_t zl = 0;
        char *z = http_gzip(data, len, &zl);
        if (z) {
            if (must_free)
                free(data);
            *gzipped = 1;
            struct MHD_Response *r = MHD_create_response_from_buffer(zl, z, MHD_RESPMEM_MUST_FREE);
            if (!r)
                free(z);
            return r;
        }
    }
    return MHD_create_response_from_buffer(len, data, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *ctype, char *data, size_t len,
                                int must_free, const char *allow) {
    int gz;
    struct MHD_Response *resp = response_for(c, data, len, must_free, &gz);
    if (!resp) {
        if (must_free && !gz)
            free(data);
        return MHD_NO;
    }
    add_headers(resp, ctype, gz);
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Basic realm=\"RabbitMQ Management\"");
    if (allow)
        MHD_add_response_header(resp, "Allow", allow);
    if (location)
        MHD_add_response_header(resp, "Location", location);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!s)
        return send_buf(c, status, "application/json", (char *)"", 0, 0, NULL);
    return send_buf(c, status, "application/json", s, strlen(s), 1, NULL);
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *error, const char *reason) {
    json_t *j = json_pack("{s:s,s:s}", "error", error, "reason", reason);
    enum MHD_Result rc = send_json(c, status, j);
    json_decref(j);
    return rc;
}

/* ---- static files (the dashboard) ---- */

static const char *mime_of(const char *path) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
        {".ico", "image/x-icon"}, {".woff2", "font/woff2"}, {".woff", "font/woff"},
        {".txt", "text/plain; charset=utf-8"}, {".map", "application/json"},
    };
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < ARRAY_LEN(types); i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static const web_asset *find_asset(const char *path) {
    for (size_t i = 0; i < web_assets_count; i++)
        if (strcmp(web_assets[i].path, path) == 0)
            return &web_assets[i];
    return NULL;
}

/* ---- URL decoding (the path is split before decoding: a vhost "/" is %2F in a segment) ---- */

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX (and '+' as a space if plus) of s[0..n) into a new string; NULL if malformed. */
static char *pct_decode(const char *s, size_t n, int plus) {
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0) {
                free(out);
                return NULL;
            }
            *o++ = (char)(h << 4 | l);
            i += 2;
        } else {
            *o++ = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = 0;
    return out;
}

/* libmicrohttpd would decode the URL before we split it: keep it as it came. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls, (void)c;
    return strlen(s);
}

static enum MHD_Result add_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    json_t *q = cls;
    char *k = pct_decode(key, strlen(key), 1), *v = value ? pct_decode(value, strlen(value), 1) : xstrndup("", 0);
    if (k && v)
        json_object_set_new(q, k, json_string(v));
    free(k);
    free(v);
    return MHD_YES;
}

/* ---- lists: RabbitMQ's filtering, sorting, paging and columns (rabbit_mgmt_util) ---- */

static const char *qstr(mgmt_req *r, const char *k) {
    json_t *v = json_object_get(r->query, k);
    return v ? json_string_value(v) : NULL;
}

/* A (dotted) field of an item, or NULL. */
static json_t *path_get(json_t *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *p = strtok_r(buf, ".", &save); p && o; p = strtok_r(NULL, ".", &save))
        o = json_is_object(o) ? json_object_get(o, p) : NULL;
    return o;
}

static const char *sort_key;
static int cmp_items(const void *a, const void *b) {
    json_t *x = path_get(*(json_t *const *)a, sort_key), *y = path_get(*(json_t *const *)b, sort_key);
    if (!x || !y)
        return !x - !y;
    if (json_is_number(x) && json_is_number(y)) {
        double dx = json_number_value(x), dy = json_number_value(y);
        return dx < dy ? -1 : dx > dy;
    }
    if (json_is_string(x) && json_is_string(y))
        return strcmp(json_string_value(x), json_string_value(y));
    return json_typeof(x) - json_typeof(y);
}

static int parse_pos(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1)
        return -1;
    *out = v;
    return 0;
}

/* Applies name/use_regex filtering, sort/sort_reverse, page/page_size and columns to a list
 * answer, as the management plugin does. Returns 0, or an error status with r->json set. */
static int shape_list(mgmt_req *r) {
    if (!json_is_array(r->json))
        return 0;
    const char *page = qstr(r, "page"), *psize = qstr(r, "page_size"), *name = qstr(r, "name"),
               *regex = qstr(r, "use_regex"), *sort = qstr(r, "sort"), *rev = qstr(r, "sort_reverse"),
               *cols = qstr(r, "columns");
    json_t *all = r->json;
    size_t total = json_array_size(all);
    json_t *items = all;
    json_incref(items);
    if (page && name && *name) { /* the plugin filters by name only when paging */
        json_t *f = json_array();
        regex_t re;
        int use_re = regex && strcmp(regex, "true") == 0;
        if (use_re && regcomp(&re, name, REG_EXTENDED | REG_NOSUB) != 0) {
            json_decref(f);
            json_decref(items);
            mgmt_error(r, 400, "bad_request", "invalid regex: %s", name);
            return 400;
        }
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            const char *n = json_string_value(json_object_get(it, "name"));
            if (!n)
                continue;
            if (use_re ? regexec(&re, n, 0, NULL, 0) == 0 : strstr(n, name) != NULL)
                json_array_append(f, it);
        }
        if (use_re)
            regfree(&re);
        json_decref(items);
        items = f;
    }
    if (sort && *sort) {
        size_t n = json_array_size(items);
        json_t **v = xmalloc((n ? n : 1) * sizeof *v);
        for (size_t i = 0; i < n; i++)
            v[i] = json_incref(json_array_get(items, i));
        sort_key = sort;
        qsort(v, n, sizeof *v, cmp_items);
        json_t *s = json_array();
        int reverse = rev && strcmp(rev, "true") == 0;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(s, v[reverse ? n - 1 - i : i]);
        free(v);
        json_decref(items);
        items = s;
    }
    if (cols && *cols) {
        json_t *s = json_array();
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            json_t *o = json_object();
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", cols);
            char *save = NULL;
            for (char *c = strtok_r(buf, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
                json_t *v = path_get(it, c);
                if (!v)
                    continue;
                char *dot = strchr(c, '.');
                if (dot) { /* message_stats.publish_details.rate keeps its nesting */
                    json_t *cur = o;
                    char part[256];
                    const char *p = c;
                    while ((dot = strchr(p, '.'))) {
                        snprintf(part, sizeof part, "%.*s", (int)(dot - p), p);
                        json_t *nx = json_object_get(cur, part);
                        if (!nx) {
                            nx = json_object();
                            json_object_set_new(cur, part, nx);
                        }
                        cur = nx;
                        p = dot + 1;
                    }
                    json_object_set(cur, p, v);
                } else {
                    json_object_set(o, c, v);
                }
            }
            json_array_append_new(s, o);
        }
        json_decref(items);
        items = s;
    }
    if (page) {
        long pg = 0, ps = 100;
        if (parse_pos(page, &pg) < 0 || (psize && parse_pos(psize, &ps) < 0)) {
            json_decref(items);
            mgmt_error(r, 400, "bad_request", "%s", "Page and page_size parameters must be positive integers");
            return 400;
        }
        if (ps > MAX_PAGE_SIZE) {
            json_decref(items);
            mgmt_error(r, 400, "bad_request", "Page size cannot be greater than %d", MAX_PAGE_SIZE);
            return 400;
        }
        size_t filtered = json_array_size(items);
        size_t pages = filtered ? (filtered + (size_t)ps - 1) / (size_t)ps : 0;
        if ((size_t)pg > pages && !(pg == 1 && pages == 0)) {
            json_decref(items);
            mgmt_error(r, 400, "bad_request", "Page out of range, page: %ld page size: %ld, len: %zu", pg, ps,
                       filtered);
            return 400;
        }
        json_t *slice = json_array();
        for (size_t i = (size_t)(pg - 1) * (size_t)ps; i < filtered && i < (size_t)pg * (size_t)ps; i++)
            json_array_append(slice, json_array_get(items, i));
        json_t *o = json_pack("{s:I,s:I,s:o,s:I,s:I,s:I,s:I}", "filtered_count", (json_int_t)filtered, "item_count",
                              (json_int_t)json_array_size(slice), "items", slice, "page", (json_int_t)pg,
                              "page_count", (json_int_t)pages, "page_size", (json_int_t)ps, "total_count",
                              (json_int_t)total);
        json_decref(items);
        json_decref(r->json);
        r->json = o;
        return 0;
    }
    json_decref(r->json);
    r->json = items;
    return 0;
}

/* ---- the alerts file: written here, off the loop (write, fsync, rename, fsync dir) ---- */

/* One writer at a time: the daemons of several --bind addresses each have a thread. */
static pthread_mutex_t alerts_mu = PTHREAD_MUTEX_INITIALIZER;

/* 0, or -1 with why in err (the previous alerts.json is left as it was, no .tmp behind). */
static int write_alerts(const char *text, char *err, size_t errlen) {
    if (!http_alerts_path[0])
        return 0;
    pthread_mutex_lock(&alerts_mu);
    char tmp[640];
    snprintf(tmp, sizeof tmp, "%s.tmp", http_alerts_path);
    int rc = -1, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = ENOSPC;
            break;
        }
        off += (size_t)w;
    }
    if (off < n || fsync(fd) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, http_alerts_path) < 0) {
        snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
    char dir[640];
    snprintf(dir, sizeof dir, "%s", http_alerts_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the rename itself survives a power cut */
        if (fsync(dfd) < 0)
            log_warn("alerts: cannot sync the directory of %s: %s", http_alerts_path, strerror(errno));
        close(dfd);
    }
out:
    pthread_mutex_unlock(&alerts_mu);
    if (rc < 0)
        log_error("alerts: %s", err);
    return rc;
}

/* ---- the request handler ---- */

static int method_of(const char *m) {
    if (strcmp(m, "GET") == 0)
        return HM_GET;
    if (strcmp(m, "HEAD") == 0)
        return HM_HEAD;
    if (strcmp(m, "PUT") == 0)
        return HM_PUT;
    if (strcmp(m, "POST") == 0)
        return HM_POST;
    if (strcmp(m, "DELETE") == 0)
        return HM_DELETE;
    return 0;
}

static int peer_is_loopback(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

/* Runs an API request through the loop: the login (with the password checked here when the
 * loop cannot check it cheaply), then the request itself. */
static enum MHD_Result api(struct MHD_Connection *c, const char *url, int method, hctx *h) {
    mgmt_req r;
    memset(&r, 0, sizeof r);
    r.method = method;
    r.loopback = peer_is_loopback(c);
    /* segments after /api/ */
    const char *p = url + 4; /* "/api" */
    if (*p == '/')
        p++;
    while (*p && r.nseg < MGMT_MAX_SEGS) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *s = pct_decode(p, n, 0);
        if (!s) {
            mgmt_req_clear(&r);
            return send_error(c, 400, "bad_request", "malformed URL");
        }
        r.seg[r.nseg++] = s;
        if (!e)
            break;
        p = e + 1;
        if (!*p) /* a trailing slash: /api/queues/ is /api/queues */
            break;
    }
    if (*p && strchr(p, '/') && r.nseg == MGMT_MAX_SEGS) {
        mgmt_req_clear(&r);
        return send_error(c, 404, "Object Not Found", "Not Found");
    }
    r.query = json_object();
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_query, r.query);
    if (h->len) {
        r.body = h->body;
        r.body_len = h->len;
        h->body = NULL;
    }
    char *pass = NULL;
    char *user = MHD_basic_auth_get_username_password(c, &pass);
    if (!user || strlen(user) >= sizeof r.user) {
        free(user);
        free(pass);
        mgmt_req_clear(&r);
        return send_buf(c, 401, "application/json", (char *)"", 0, 0, NULL); /* RabbitMQ: no body */
    }
    snprintf(r.user, sizeof r.user, "%s", user);
    MHD_free(user);
    r.pass = pass ? pass : xstrndup("", 0);
    /* GET /api/queues[/{vhost}]: from a snapshot shared by the requests of a second */
    int qlist = (method == HM_GET || method == HM_HEAD) && r.nseg >= 1 && r.nseg <= 2 && strcmp(r.seg[0], "queues") == 0;
    char key[600];
    if (qlist) {
        snprintf(key, sizeof key, "%s\n%s", r.user, r.nseg == 2 ? r.seg[1] : "");
        r.want_snap = !http_queues_fresh(key, &r.snap_gen);
    }
    mgmt_call(&r);
    if (r.need_check) { /* a PBKDF2 hash: tens of ms, checked here rather than on the loop */
        int ok = auth_password_matches(r.check_alg, r.check_hash, r.check_hash_len,
                                       (slice){(const uint8_t *)r.pass, strlen(r.pass)});
        if (!ok) {
            mgmt_req_clear(&r);
            return send_error(c, 401, "not_authorized", "Login failed");
        }
        r.need_check = 0;
        r.pw_checked = 1;
        json_decref(r.json);
        r.json = NULL;
        mgmt_call(&r);
    }
    if (r.amqp && r.status == 0)
        http_amqp(&r);
    if (method != HM_GET && method != HM_HEAD) /* a change through the API: the next list sees it */
        http_queues_cache_clear();
    if (qlist && r.qlist && r.status == 200) {
        char *q = json_dumps(r.query, JSON_COMPACT | JSON_SORT_KEYS);
        char ukey[1200];
        snprintf(ukey, sizeof ukey, "%s?%s", url, q ? q : "");
        free(q);
        qblob *text = NULL;
        int rc = http_queue_list(&r, key, ukey, http_node, &text);
        if (rc == -2) { /* another user's snapshot took the cache meanwhile: a new one */
            r.want_snap = 1;
            r.qlist = 0;
            mgmt_call(&r);
            rc = r.qlist && r.status == 200 ? http_queue_list(&r, key, ukey, http_node, &text) : -1;
        }
        if (rc == 0) { /* the shared text (or its gzipped form, made once), sent without a copy */
            qblob *z = text->len >= GZIP_MIN && accepts_gzip(c) ? qblob_gzip(text) : NULL;
            if (z) {
                qblob_unref(text);
                text = z;
            }
            struct MHD_Response *resp =
                MHD_create_response_from_buffer_with_free_callback_cls(text->len, text->data, qblob_unref, text);
            enum MHD_Result res = MHD_NO;
            if (resp) {
                add_headers(resp, "application/json", z != NULL);
                res = MHD_queue_response(c, 200, resp);
                MHD_destroy_response(resp);
            } else {
                qblob_unref(text);
            }
            mgmt_req_clear(&r);
            return res;
        }
        if (rc == 1) { /* columns or another sort key: the general path */
            json_error_t je;
            json_decref(r.json);
            r.json = json_loadb(text->data, text->len, 0, &je);
            qblob_unref(text);
        }
    }
    char werr[800];
    if (r.persist_alerts && write_alerts(r.persist_alerts, werr, sizeof werr) < 0 && r.status < 300)
        mgmt_error(&r, 500, "internal_server_error",
                   "the change is in effect but was not saved (%s): a restart loses it unless a later change is saved",
                   werr);
    if (r.status < 300 && r.json && method == HM_GET)
        shape_list(&r);
    enum MHD_Result rc;
    location = r.location;
    if (r.status == 204 || (!r.json && !r.text))
        rc = send_buf(c, r.status ? r.status : 204, "application/json", (char *)"", 0, 0, NULL);
    else if (r.text) {
        rc = send_buf(c, r.status, "text/plain; charset=utf-8", r.text, r.text_len, 1, NULL);
        r.text = NULL;
    } else
        rc = send_json(c, r.status, r.json);
    location = NULL;
    mgmt_req_clear(&r);
    return rc;
}

static enum MHD_Result metrics(struct MHD_Connection *c, int which) {
    mgmt_req r;
    memset(&r, 0, sizeof r);
    r.method = HM_GET;
    r.metrics = which;
    mgmt_call(&r);
    enum MHD_Result rc;
    if (r.text) {
        rc = send_buf(c, r.status ? r.status : 200, "text/plain; version=0.0.4; charset=utf-8", r.text, r.text_len, 1,
                      NULL);
        r.text = NULL;
    } else {
        rc = send_json(c, r.status ? r.status : 503, r.json);
    }
    mgmt_req_clear(&r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method_s,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    /* Management traffic yields the CPU to message traffic: this thread runs at a lower
     * priority than the loop (Linux: a thread's nice value is its own), and as SCHED_BATCH, so
     * that its waking never preempts the loop: woken by the loop's answer (finish()), a normal
     * thread that had slept took the loop's CPU at once and held the loop for the 3-4 ms of
     * sorting and writing a 10,000-queue list (measured); SCHED_BATCH keeps the nice 10 share
     * of a busy CPU (SCHED_IDLE would starve the API on a saturated broker). */
    static _Thread_local int niced;
    if (!niced) {
        niced = 1;
        struct sched_param sp = {0};
        int e = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
        if (e != 0)
            log_debug("http: cannot make the HTTP thread SCHED_BATCH: %s", strerror(e));
        if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) < 0)
            log_debug("http: cannot lower the HTTP thread's priority: %s", strerror(errno));
    }
    int metrics_only = cls != NULL; /* the --prometheus-port daemon serves /metrics only */
    hctx *h = *con_cls;
    if (!h) { /* the first call: headers only */
        h = xcalloc(1, sizeof *h);
        *con_cls = h;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > MAX_BODY) {
            h->too_big = 1;
            return send_error(c, 413, "bad_request", "Request body is too large");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!h->too_big) {
            if (h->len + *upload_size > MAX_BODY) {
                h->too_big = 1;
                free(h->body);
                h->body = NULL;
                h->len = h->cap = 0;
            } else {
                if (h->len + *upload_size + 1 > h->cap) {
                    h->cap = (h->len + *upload_size + 1) * 2;
                    if (h->cap > MAX_BODY + 1)
                        h->cap = MAX_BODY + 1;
                    h->body = xrealloc(h->body, h->cap);
                }
                memcpy(h->body + h->len, upload, *upload_size);
                h->len += *upload_size;
                h->body[h->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (h->too_big)
        return send_error(c, 413, "bad_request", "Request body is too large");
    int method = method_of(method_s);
    if (strcmp(url, "/metrics") == 0 || strcmp(url, "/metrics/per-object") == 0) {
        if (method != HM_GET && method != HM_HEAD)
            return send_buf(c, 405, "application/json",
                            (char *)"", 0,
                            0, "GET, HEAD");
        return metrics(c, url[8] ? 2 : 1);
    }
    if (metrics_only)
        return send_error(c, 404, "Object Not Found", "Not Found");
    if (strncmp(url, "/api/", 5) == 0 || strcmp(url, "/api") == 0) {
        if (!method)
            return send_buf(c, 405, "application/json",
                            (char *)"", 0,
                            0, "GET, PUT, POST, DELETE, HEAD, OPTIONS");
        return api(c, url, method, h);
    }
    /* the dashboard's files: no login, as the management plugin serves its own */
    if (method != HM_GET && method != HM_HEAD)
        return send_buf(c, 405, "application/json",
                        (char *)"", 0, 0,
                        "GET, HEAD");
    const char *path = url[0] == '/' ? url + 1 : url;
    if (!*path)
        path = "index.html";
    char *dec = pct_decode(path, strlen(path), 0);
    const web_asset *a = dec && !strstr(dec, "..") ? find_asset(dec) : NULL;
    if (!a && dec) { /* a directory: its index.html */
        char idx[600];
        size_t n = strlen(dec);
        snprintf(idx, sizeof idx, "%s%sindex.html", dec, n && dec[n - 1] == '/' ? "" : "/");
        if (!strstr(dec, ".."))
            a = find_asset(idx);
    }
    free(dec);
    if (!a)
        return send_error(c, 404, "Object Not Found", "Not Found");
    return send_buf(c, 200, mime_of(a->path), (char *)a->data, a->len, 0, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    hctx *h = *con_cls;
    if (h) {
        free(h->body);
        free(h);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    log_debug("http: %s", msg);
}

static struct MHD_Daemon *start_one(const char *addr, int port, int metrics_only, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1) {
            snprintf(err, errlen, "bad bind address %s", addr);
            return NULL;
        }
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1) {
            snprintf(err, errlen, "bad bind address %s", addr);
            return NULL;
        }
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, metrics_only ? (void *)1 : NULL, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
        no_unescape, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_END);
    if (!d)
        snprintf(err, errlen, "cannot listen on %s port %d for HTTP: %s", addr, port,
                 errno ? strerror(errno) : "address in use");
    return d;
}

int http_start(broker *b, char *err, size_t errlen) {
    snprintf(http_alerts_path, sizeof http_alerts_path, "%s/alerts.json", b->cfg.data_dir);
    if (b->mgmt)
        snprintf(http_node, sizeof http_node, "%s", mgmt_node(b));
    /* the AMQP port on a loopback address this broker listens on */
    http_amqp_port = b->cfg.port;
    snprintf(http_amqp_host, sizeof http_amqp_host, "%s", b->cfg.bind[0]);
    for (int i = b->cfg.nbind - 1; i >= 0; i--)
        if (strcmp(b->cfg.bind[i], "127.0.0.1") == 0 || strcmp(b->cfg.bind[i], "0.0.0.0") == 0 ||
            strcmp(b->cfg.bind[i], "::") == 0)
            snprintf(http_amqp_host, sizeof http_amqp_host, "127.0.0.1");
    if (strcmp(http_amqp_host, "::1") == 0 && b->cfg.nbind == 1)
        snprintf(http_amqp_host, sizeof http_amqp_host, "::1");
    for (int k = 0; k < 2; k++) {
        int port = k ? b->cfg.prometheus_port : b->cfg.http_port;
        if (port <= 0)
            continue;
        for (int i = 0; i < b->cfg.nbind && ndaemons < (int)ARRAY_LEN(daemons); i++) {
            errno = 0;
            struct MHD_Daemon *d = start_one(b->cfg.bind[i], port, k, err, errlen);
            if (!d)
                return -1;
            daemons[ndaemons++] = d;
            log_info("listening for HTTP (%s) on %s%s%s:%d", k ? "Prometheus metrics" : "management API, metrics, dashboard",
                     strchr(b->cfg.bind[i], ':') ? "[" : "", b->cfg.bind[i], strchr(b->cfg.bind[i], ':') ? "]" : "",
                     port);
        }
    }
    return 0;
}

void http_stop(void) {
    for (int i = 0; i < ndaemons; i++)
        MHD_stop_daemon(daemons[i]);
    ndaemons = 0;
    http_queues_cache_clear();
}
