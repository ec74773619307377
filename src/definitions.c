/* definitions.c — loads a RabbitMQ definitions file (what `rabbitmqctl export_definitions`
 * writes, RabbitMQ 3.10's shape) at start: vhosts, users (with their RabbitMQ password
 * hashes as they come, or a clear "password" hashed here), permissions, topic permissions,
 * vhost-limits parameters, users[].limits, exchanges, queues and bindings. What Ferry does
 * not understand (policies, other parameters, global parameters, unknown queue types, unknown
 * keys) is reported in the log, never dropped silently. A file that is not such JSON, or a
 * known entry that is malformed (a user without a name, a bad hash, a regex that does not
 * compile), stops ferryd from starting, naming the entry.
 *
 * JSON is parsed with jansson (Debian's libjansson). */
#include "broker.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "persist.h"
#include "util.h"

typedef struct ctx {
    broker *b;
    char *err;
    size_t errlen;
} ctx;

static int fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static slice js(const json_t *s) { return (slice){(const uint8_t *)json_string_value(s), json_string_length(s)}; }

/* A string member (required: missing or not a string fails; optional: dflt). */
static int str_member(ctx *c, const json_t *o, const char *key, const char *what, size_t i, const char *dflt,
                      slice *out) {
    json_t *v = json_object_get(o, key);
    if (!v && dflt) {
        *out = slice_str(dflt);
        return 0;
    }
    if (!json_is_string(v))
        return fail(c, "definitions: %s #%zu: '%s' %s", what, i + 1, key, v ? "is not a string" : "is missing");
    if (json_string_length(v) > 255)
        return fail(c, "definitions: %s #%zu: '%s' is longer than 255 bytes", what, i + 1, key);
    *out = js(v);
    return 0;
}

static int bool_member(const json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* JSON arguments as an AMQP field table (strings, integers, booleans, floats, nested
 * objects and arrays). */
static void put_value(buf *t, json_t *v);
static void put_table(buf *t, json_t *o) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        size_t kl = strlen(k);
        if (kl > 255)
            continue;
        buf_shortstr(t, k, kl);
        put_value(t, v);
    }
}
static void put_value(buf *t, json_t *v) {
    if (json_is_string(v)) {
        buf_u8(t, 'S');
        buf_longstr(t, json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        buf_u8(t, 'l');
        buf_u64(t, (uint64_t)json_integer_value(v));
    } else if (json_is_boolean(v)) {
        buf_u8(t, 't');
        buf_u8(t, json_is_true(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        buf_u8(t, 'd');
        buf_u64(t, bits);
    } else if (json_is_object(v)) {
        buf sub;
        buf_init(&sub);
        put_table(&sub, v);
        buf_u8(t, 'F');
        buf_longstr(t, buf_head(&sub), sub.len);
        buf_free(&sub);
    } else if (json_is_array(v)) {
        buf sub;
        buf_init(&sub);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) put_value(&sub, e);
        buf_u8(t, 'A');
        buf_longstr(t, buf_head(&sub), sub.len);
        buf_free(&sub);
    } else {
        buf_u8(t, 'V');
    }
}

void definitions_put_table(buf *t, json_t *o) { put_table(t, o); }

static json_t *array_member(ctx *c, json_t *root, const char *key, int *bad) {
    json_t *a = json_object_get(root, key);
    if (a && !json_is_array(a)) {
        fail(c, "definitions: '%s' is not a list", key);
        *bad = 1;
        return NULL;
    }
    return a;
}

static int limit_value(ctx *c, json_t *v, const char *what, int64_t *out) {
    if (!json_is_integer(v))
        return fail(c, "definitions: %s is not an integer", what);
    json_int_t n = json_integer_value(v);
    *out = n < 0 ? -1 : (int64_t)n;
    return 0;
}

static int load_vhosts(ctx *c, json_t *a) {
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice name;
        if (!json_is_object(o))
            return fail(c, "definitions: vhost #%zu is not an object", i + 1);
        if (str_member(c, o, "name", "vhost", i, NULL, &name) < 0)
            return -1;
        vhost_get(c->b, name);
    }
    return 0;
}

static int load_users(ctx *c, json_t *a) {
    access_db *db = c->b->access;
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice name, alg_name;
        if (!json_is_object(o))
            return fail(c, "definitions: user #%zu is not an object", i + 1);
        if (str_member(c, o, "name", "user", i, NULL, &name) < 0 ||
            str_member(c, o, "hashing_algorithm", "user", i, "rabbit_password_hashing_sha256", &alg_name) < 0)
            return -1;
        buf h;
        buf_init(&h);
        int alg;
        json_t *pw = json_object_get(o, "password"), *ph = json_object_get(o, "password_hash");
        if (json_is_string(pw)) { /* a clear password: hashed here, never kept */
            auth_hash_password(db, js(pw), &alg, &h);
        } else {
            alg = auth_alg_parse((const char *)alg_name.p);
            if (alg < 0)
                return fail(c, "definitions: user '%.*s': unknown hashing_algorithm '%s'", (int)name.n,
                            (const char *)name.p, (const char *)alg_name.p);
            if (ph && !json_is_string(ph)) {
                buf_free(&h);
                return fail(c, "definitions: user '%.*s': password_hash is not a string", (int)name.n,
                            (const char *)name.p);
            }
            if (auth_decode_hash(alg, ph ? json_string_value(ph) : "", &h) < 0) {
                buf_free(&h);
                return fail(c, "definitions: user '%.*s': password_hash is not a valid %s hash", (int)name.n,
                            (const char *)name.p, (const char *)alg_name.p);
            }
            if (h.len == 0)
                alg = HASH_NONE;
        }
        /* tags: a list (3.10) or a comma-separated string (older exports) */
        buf tags;
        buf_init(&tags);
        json_t *t = json_object_get(o, "tags");
        if (json_is_string(t)) {
            buf_put(&tags, json_string_value(t), json_string_length(t));
        } else if (json_is_array(t)) {
            size_t k;
            json_t *e;
            json_array_foreach(t, k, e) {
                if (!json_is_string(e))
                    continue;
                if (tags.len)
                    buf_put(&tags, ",", 1);
                buf_put(&tags, json_string_value(e), json_string_length(e));
            }
        }
        buf_put(&tags, "", 1);
        user *u = auth_put_user(db, name, alg, buf_head(&h), h.len, (const char *)buf_head(&tags));
        buf_free(&h);
        buf_free(&tags);
        json_t *lim = json_object_get(o, "limits");
        if (json_is_object(lim)) {
            const char *k;
            json_t *v;
            json_object_foreach(lim, k, v) {
                if (strcmp(k, "max-connections") == 0) {
                    if (limit_value(c, v, "users[].limits.max-connections", &u->max_connections) < 0)
                        return -1;
                } else if (strcmp(k, "max-channels") == 0) {
                    if (limit_value(c, v, "users[].limits.max-channels", &u->max_channels) < 0)
                        return -1;
                } else {
                    log_warn("definitions: user '%s': limit '%s' is not supported, ignored", u->name, k);
                }
            }
        }
    }
    return 0;
}

static int load_perms(ctx *c, json_t *a, int topic) {
    size_t i;
    json_t *o;
    const char *what = topic ? "topic permission" : "permission";
    json_array_foreach(a, i, o) {
        slice user, vh, x = {0}, conf = {0}, wr, rd_;
        if (!json_is_object(o))
            return fail(c, "definitions: %s #%zu is not an object", what, i + 1);
        if (str_member(c, o, "user", what, i, NULL, &user) < 0 || str_member(c, o, "vhost", what, i, NULL, &vh) < 0 ||
            (topic && str_member(c, o, "exchange", what, i, NULL, &x) < 0) ||
            (!topic && str_member(c, o, "configure", what, i, NULL, &conf) < 0) ||
            str_member(c, o, "write", what, i, NULL, &wr) < 0 || str_member(c, o, "read", what, i, NULL, &rd_) < 0)
            return -1;
        if (!vhost_find(c->b, vh))
            return fail(c, "definitions: %s #%zu: vhost '%.*s' is not defined", what, i + 1, (int)vh.n,
                        (const char *)vh.p);
        char e[300];
        int rc = topic ? access_set_topic_perm(c->b->access, user, vh, x, (const char *)wr.p, (const char *)rd_.p, e,
                                               sizeof e)
                       : access_set_perm(c->b->access, user, vh, (const char *)conf.p, (const char *)wr.p,
                                         (const char *)rd_.p, e, sizeof e);
        if (rc < 0)
            return fail(c, "definitions: %s of user '%.*s' on vhost '%.*s': %s", what, (int)user.n,
                        (const char *)user.p, (int)vh.n, (const char *)vh.p, e);
    }
    return 0;
}

static int load_parameters(ctx *c, json_t *a) {
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice comp, vh;
        if (!json_is_object(o))
            return fail(c, "definitions: parameter #%zu is not an object", i + 1);
        if (str_member(c, o, "component", "parameter", i, NULL, &comp) < 0 ||
            str_member(c, o, "vhost", "parameter", i, "/", &vh) < 0)
            return -1;
        if (!slice_eqs(comp, "vhost-limits")) {
            log_warn("definitions: parameter #%zu (component '%.*s') is not supported by Ferry, ignored", i + 1,
                     (int)comp.n, (const char *)comp.p);
            continue;
        }
        vhost *v = vhost_find(c->b, vh);
        json_t *val = json_object_get(o, "value");
        if (!v || !json_is_object(val))
            return fail(c, "definitions: vhost-limits parameter #%zu: unknown vhost or no value", i + 1);
        const char *k;
        json_t *x;
        json_object_foreach(val, k, x) {
            if (strcmp(k, "max-connections") == 0) {
                if (limit_value(c, x, "vhost-limits max-connections", &v->max_connections) < 0)
                    return -1;
            } else if (strcmp(k, "max-queues") == 0) {
                if (limit_value(c, x, "vhost-limits max-queues", &v->max_queues) < 0)
                    return -1;
            } else {
                log_warn("definitions: vhost '%s': limit '%s' is not supported, ignored", v->name, k);
            }
        }
    }
    return 0;
}

static int load_exchanges(ctx *c, json_t *a) {
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice name, vh, type;
        if (!json_is_object(o))
            return fail(c, "definitions: exchange #%zu is not an object", i + 1);
        if (str_member(c, o, "name", "exchange", i, NULL, &name) < 0 ||
            str_member(c, o, "vhost", "exchange", i, "/", &vh) < 0 ||
            str_member(c, o, "type", "exchange", i, NULL, &type) < 0)
            return -1;
        vhost *v = vhost_find(c->b, vh);
        int t;
        if (!v)
            return fail(c, "definitions: exchange '%.*s': vhost '%.*s' is not defined", (int)name.n,
                        (const char *)name.p, (int)vh.n, (const char *)vh.p);
        if (exchange_type_parse(type, &t) < 0) {
            log_warn("definitions: exchange '%.*s': type '%.*s' is not supported by Ferry, skipped", (int)name.n,
                     (const char *)name.p, (int)type.n, (const char *)type.p);
            continue;
        }
        if (name.n == 0 || slice_prefix(name, "amq.") || broker_exchange(v, name))
            continue;
        buf args;
        buf_init(&args);
        json_t *ja = json_object_get(o, "arguments");
        if (json_is_object(ja))
            put_table(&args, ja);
        exchange *x = exchange_new(v, name, t, bool_member(o, "durable", 1), bool_member(o, "auto_delete", 0),
                                   bool_member(o, "internal", 0), (slice){buf_head(&args), args.len});
        fval dt;
        int sub;
        if (t == EX_DELAYED && table_get((slice){buf_head(&args), args.len}, "x-delayed-type", &dt) &&
            fval_is_str(&dt) && exchange_type_parse(dt.s, &sub) == 0 && sub != EX_DELAYED)
            x->subtype = sub;
        buf_free(&args);
        broker_add_exchange(x);
        persist_exchange(c->b->store, x, 1);
    }
    return 0;
}

static int load_queues(ctx *c, json_t *a) {
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice name, vh;
        if (!json_is_object(o))
            return fail(c, "definitions: queue #%zu is not an object", i + 1);
        if (str_member(c, o, "name", "queue", i, NULL, &name) < 0 || str_member(c, o, "vhost", "queue", i, "/", &vh) < 0)
            return -1;
        vhost *v = vhost_find(c->b, vh);
        if (!v)
            return fail(c, "definitions: queue '%.*s': vhost '%.*s' is not defined", (int)name.n,
                        (const char *)name.p, (int)vh.n, (const char *)vh.p);
        buf args;
        buf_init(&args);
        json_t *ja = json_object_get(o, "arguments");
        if (json_is_object(ja))
            put_table(&args, ja);
        slice as = {buf_head(&args), args.len};
        fval qt;
        if (table_get(as, "x-queue-type", &qt) && fval_is_str(&qt) && !slice_eqs(qt.s, "classic") &&
            !slice_eqs(qt.s, "quorum") && !slice_eqs(qt.s, "stream")) {
            log_warn("definitions: queue '%.*s': type '%.*s' is not supported by Ferry, skipped", (int)name.n,
                     (const char *)name.p, (int)qt.s.n, (const char *)qt.s.p);
            buf_free(&args);
            continue;
        }
        if (name.n == 0 || broker_queue(v, name)) {
            buf_free(&args);
            continue;
        }
        int durable = bool_member(o, "durable", 1), auto_delete = bool_member(o, "auto_delete", 0);
        char why[1024];
        if (args_queue_problem(v->name, name, durable, 0, auto_delete, as, why, sizeof why) < 0) {
            /* as RabbitMQ: the import stops at the first queue its declare would refuse (406) */
            buf_free(&args);
            return fail(c, "definitions: PRECONDITION_FAILED - %s", why);
        }
        queue *q = queue_new(v, name, durable, 0, auto_delete, NULL, as);
        buf_free(&args);
        broker_add_queue(q);
        persist_queue(c->b->store, q, 1);
        if (q->is_stream)
            stream_attach(q, 1); /* as queue.declare: its log's files appear with its first record */
    }
    return 0;
}

static int load_bindings(ctx *c, json_t *a) {
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) {
        slice src, dst, vh, dt, key;
        if (!json_is_object(o))
            return fail(c, "definitions: binding #%zu is not an object", i + 1);
        if (str_member(c, o, "source", "binding", i, NULL, &src) < 0 ||
            str_member(c, o, "destination", "binding", i, NULL, &dst) < 0 ||
            str_member(c, o, "vhost", "binding", i, "/", &vh) < 0 ||
            str_member(c, o, "destination_type", "binding", i, "queue", &dt) < 0 ||
            str_member(c, o, "routing_key", "binding", i, "", &key) < 0)
            return -1;
        vhost *v = vhost_find(c->b, vh);
        exchange *x = v ? broker_exchange(v, src) : NULL;
        int to_x = slice_eqs(dt, "exchange");
        queue *q = v && !to_x ? broker_queue(v, dst) : NULL;
        exchange *dx = v && to_x ? broker_exchange(v, dst) : NULL;
        if (!x || src.n == 0 || (!q && !dx)) {
            log_warn("definitions: binding #%zu from '%.*s' to '%.*s': source or destination missing, skipped",
                     i + 1, (int)src.n, (const char *)src.p, (int)dst.n, (const char *)dst.p);
            continue;
        }
        buf args;
        buf_init(&args);
        json_t *ja = json_object_get(o, "arguments");
        if (json_is_object(ja))
            put_table(&args, ja);
        slice as = {buf_head(&args), args.len};
        if (!binding_find(x, q, dx, key, as)) {
            binding *bd = binding_add(x, q, dx, key, as);
            persist_binding(c->b->store, bd, 1);
        }
        buf_free(&args);
    }
    return 0;
}

int definitions_load(broker *b, const char *path, char *err, size_t errlen) {
    ctx c = {b, err, errlen};
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(&c, "definitions file %s: %s (line %d, column %d)", path, je.text, je.line, je.column);
    int rc = definitions_load_json(b, root, path, err, errlen);
    json_decref(root);
    return rc;
}

int definitions_load_json(broker *b, json_t *root, const char *path, char *err, size_t errlen) {
    ctx c = {b, err, errlen};
    int rc = -1, bad = 0;
    if (!json_is_object(root)) {
        fail(&c, "definitions file %s: not a JSON object", path);
        goto out;
    }
    json_t *vhosts = array_member(&c, root, "vhosts", &bad), *users = array_member(&c, root, "users", &bad),
           *perms = array_member(&c, root, "permissions", &bad),
           *tperms = array_member(&c, root, "topic_permissions", &bad),
           *params = array_member(&c, root, "parameters", &bad), *xs = array_member(&c, root, "exchanges", &bad),
           *qs = array_member(&c, root, "queues", &bad), *bs = array_member(&c, root, "bindings", &bad);
    if (bad)
        goto out;
    if ((vhosts && load_vhosts(&c, vhosts) < 0) || (users && load_users(&c, users) < 0) ||
        (perms && load_perms(&c, perms, 0) < 0) || (tperms && load_perms(&c, tperms, 1) < 0) ||
        (params && load_parameters(&c, params) < 0) || (xs && load_exchanges(&c, xs) < 0) ||
        (qs && load_queues(&c, qs) < 0) || (bs && load_bindings(&c, bs) < 0))
        goto out;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        static const char *known[] = {"vhosts", "users", "permissions", "topic_permissions", "parameters", "exchanges",
                                      "queues", "bindings", "rabbit_version", "rabbitmq_version", "product_name",
                                      "product_version"};
        int found = 0;
        for (size_t i = 0; i < ARRAY_LEN(known); i++)
            found |= strcmp(k, known[i]) == 0;
        if (found)
            continue;
        if (json_is_array(v) && json_array_size(v) == 0)
            continue; /* e.g. "policies": [] — nothing left out */
        log_warn("definitions: '%s' (%zu entries) is not supported by Ferry, ignored", k,
                 json_is_array(v) ? json_array_size(v) : (size_t)1);
    }
    log_info("definitions: loaded %s: %zu users, %zu vhosts, %zu permissions", path, b->access->users.count,
             b->vhosts.count, b->access->perms.count);
    rc = 0;
out:
    return rc;
}
