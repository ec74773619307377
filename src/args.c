/* args.c — the x-argument rules, in one table, with RabbitMQ's reply texts.
 *
 * Every queue argument ferryd knows is one row of queue_args: how its value is checked on
 * declare, which queue types support it (RabbitMQ 3.10+: an argument the type does not
 * support is refused, one RabbitMQ does not know is ignored), and whether a redeclare must
 * repeat it unchanged. queue.declare of a new queue runs the checks in RabbitMQ's order:
 *   1. values (rows in table order): "invalid arg 'x-max-priority' for queue 'q' in vhost
 *      '/': {max_value_exceeded,256}";
 *   2. type support (the client's arguments in their order): "invalid arg 'x-max-priority'
 *      for queue 'q' in vhost '/' of queue type rabbit_quorum_queue";
 *   3. Ferry's own arguments (x-retry-delays, x-deduplication-window; RabbitMQ ignores them);
 *   4. a quorum or stream queue must be durable, not exclusive, not auto-delete (in that order).
 * Binding arguments (x-match, consistent-hash weights) and the exchange's alternate-exchange
 * are checked here too, so each rule has one home. */
#include "channel_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* How a value is checked on declare. */
enum {
    ARG_NONE,    /* not checked (only type support and equivalence) */
    ARG_INT,     /* a non-negative integer */
    ARG_EXPIRES, /* a positive integer */
    ARG_PRIO,    /* an integer 0..255 */
    ARG_XSTR,    /* a long string */
    ARG_BOOL,
    ARG_ENUM,    /* one of allowed */
    ARG_DELAYS,  /* Ferry: at most 64 delays in ms, each 0..one year */
    ARG_WINDOW,  /* Ferry: a positive number of ms */
    ARG_MAXAGE,  /* x-max-age: a positive integer and one of Y M D h m s */
};

static const struct queue_arg {
    const char *name;
    uint8_t kind;
    uint8_t equiv;       /* a redeclare must give the same value (RabbitMQ compares it) */
    const char *types;   /* queue types that support it: c classic, q quorum, s stream; NULL: Ferry's */
    const char *allowed; /* ARG_ENUM: space-separated values */
    const char *what;    /* ARG_ENUM: how RabbitMQ names a bad value (NULL: invalid_overflow) */
} queue_args[] = {
    {"x-message-ttl", ARG_INT, 1, "cq", 0, 0},
    {"x-expires", ARG_EXPIRES, 1, "cq", 0, 0},
    {"x-max-length", ARG_INT, 1, "cq", 0, 0},
    {"x-max-length-bytes", ARG_INT, 1, "cqs", 0, 0},
    {"x-max-priority", ARG_PRIO, 1, "c", 0, 0},
    {"x-max-in-memory-length", ARG_INT, 1, "q", 0, 0},
    {"x-max-in-memory-bytes", ARG_INT, 1, "q", 0, 0},
    {"x-dead-letter-exchange", ARG_XSTR, 1, "cq", 0, 0},
    {"x-dead-letter-routing-key", ARG_XSTR, 1, "cq", 0, 0},
    {"x-single-active-consumer", ARG_BOOL, 1, "cq", 0, 0},
    {"x-overflow", ARG_ENUM, 1, "cq", " drop-head reject-publish reject-publish-dlx ", 0},
    {"x-queue-mode", ARG_ENUM, 1, "c", " default lazy ", "queue mode"},
    {"x-queue-type", ARG_ENUM, 1, "cqs", " classic quorum stream ", "queue type"},
    {"x-queue-master-locator", ARG_XSTR, 0, "c", 0, 0},
    {"x-queue-leader-locator", ARG_XSTR, 0, "qs", 0, 0},
    {"x-delivery-limit", ARG_NONE, 1, "q", 0, 0},
    {"x-queue-version", ARG_NONE, 0, "c", 0, 0},
    {"x-quorum-initial-group-size", ARG_NONE, 0, "q", 0, 0},
    {"x-dead-letter-strategy", ARG_NONE, 0, "q", 0, 0},
    {"x-max-age", ARG_MAXAGE, 1, "s", 0, 0},
    {"x-stream-max-segment-size-bytes", ARG_INT, 1, "s", 0, 0},
    {"x-stream-filter-size-bytes", ARG_NONE, 0, "s", 0, 0}, /* RabbitMQ 3.13's Bloom filter size */
    {"x-initial-cluster-size", ARG_NONE, 0, "s", 0, 0},
    {"x-retry-delays", ARG_DELAYS, 0, NULL, 0, 0},
    {"x-deduplication-window", ARG_WINDOW, 0, NULL, 0, 0},
};

/* Is v one of the space-separated words of list? */
static int in_list(const char *list, slice v) {
    char word[300];
    if (v.n + 3 > sizeof word)
        return 0;
    snprintf(word, sizeof word, " %.*s ", (int)v.n, (const char *)v.p);
    return strstr(list, word) != NULL;
}

/* Writes RabbitMQ's (or, for Ferry's arguments, Ferry's) reason for a bad value of row a
 * into why; 0 if the value is good. */
static int arg_problem(const struct queue_arg *a, const fval *v, char *why, size_t n) {
    int kind = a->kind;
    if (kind == ARG_INT || kind == ARG_EXPIRES || kind == ARG_PRIO) {
        if (!fval_is_int(v))
            snprintf(why, n, "\"expected integer, got %s\"", fval_type_name(v->type));
        else if (kind == ARG_EXPIRES && v->i == 0)
            snprintf(why, n, "{value_zero,0}");
        else if (v->i < 0)
            snprintf(why, n, "{value_negative,%lld}", (long long)v->i);
        else if (kind == ARG_PRIO && v->i > 255)
            snprintf(why, n, "{max_value_exceeded,%lld}", (long long)v->i);
        else
            return 0;
    } else if (kind == ARG_BOOL) {
        if (v->type == 't')
            return 0;
        snprintf(why, n, "{unacceptable_type,%s}", fval_type_name(v->type));
    } else if (kind == ARG_ENUM) {
        if (fval_is_str(v) && in_list(a->allowed, v->s))
            return 0;
        if (!a->what)
            snprintf(why, n, "invalid_overflow");
        else if (fval_is_str(v))
            snprintf(why, n, "\"unsupported %s '%.*s'\"", a->what, (int)MIN(v->s.n, 100), (const char *)v->s.p);
        else
            snprintf(why, n, "{unacceptable_type,%s}", fval_type_name(v->type));
    } else if (kind == ARG_DELAYS) {
        int ok = v->type == 'A';
        size_t count = 0;
        if (ok) {
            rd r = rd_make(v->s.p, v->s.n);
            fval e;
            while (ok && array_next(&r, &e) == 1)
                ok = fval_is_int(&e) && e.i >= 0 && e.i <= 365LL * 86400 * 1000 && ++count <= 64;
        }
        if (ok)
            return 0;
        snprintf(why, n, "expected a list of at most 64 delays in milliseconds (integers from 0 to one year)");
    } else if (kind == ARG_MAXAGE) {
        if (!fval_is_str(v))
            snprintf(why, n, "{unacceptable_type,%s}", fval_type_name(v->type));
        else if (stream_parse_age(v->s) < 0)
            snprintf(why, n, "invalid_max_age");
        else
            return 0;
    } else if (kind == ARG_WINDOW) {
        if (fval_is_int(v) && v->i > 0)
            return 0;
        snprintf(why, n, "expected a positive integer (milliseconds)");
    } else {
        return 0;
    }
    return -1;
}

/* Checks the values of the rows that are RabbitMQ's (ferry = 0) or Ferry's (ferry = 1). */
static int check_values(const char *vh, slice qname, slice args, int ferry, char *err, size_t errlen) {
    for (size_t i = 0; i < ARRAY_LEN(queue_args); i++) {
        const struct queue_arg *a = &queue_args[i];
        fval v;
        if (a->kind == ARG_NONE || (a->types == NULL) != ferry || !table_get(args, a->name, &v))
            continue;
        if (a->kind == ARG_XSTR) {
            if (v.type != 'S') {
                snprintf(err, errlen, "invalid type '%s' for arg '%s' in queue '%.*s' in vhost '%s'",
                         fval_type_name(v.type), a->name, (int)qname.n, (const char *)qname.p, vh);
                return -1;
            }
            continue;
        }
        char why[200];
        if (arg_problem(a, &v, why, sizeof why) < 0) {
            snprintf(err, errlen, "invalid arg '%s' for queue '%.*s' in vhost '%s': %s", a->name, (int)qname.n,
                     (const char *)qname.p, vh, why);
            return -1;
        }
    }
    return 0;
}

/* The first of the client's arguments (in its order) the queue type does not support. */
static int check_type_support(const char *vh, slice qname, slice args, int quorum, int stream, char *err,
                              size_t errlen) {
    char type = stream ? 's' : quorum ? 'q' : 'c';
    rd r = rd_make(args.p, args.n);
    slice k;
    fval v;
    while (table_next(&r, &k, &v) == 1) {
        for (size_t i = 0; i < ARRAY_LEN(queue_args); i++) {
            const struct queue_arg *a = &queue_args[i];
            if (!a->types || !slice_eqs(k, a->name) || strchr(a->types, type))
                continue;
            snprintf(err, errlen, "invalid arg '%s' for queue '%.*s' in vhost '%s' of queue type %s", a->name,
                     (int)qname.n, (const char *)qname.p, vh,
                     stream ? "rabbit_stream_queue" : quorum ? "rabbit_quorum_queue" : "rabbit_classic_queue");
            return -1;
        }
    }
    return 0;
}

/* queue.declare of a new queue: the four checks above, in order. 0, or -1 with RabbitMQ's
 * 406 text in err (also what a definitions import answers 400 with). */
int args_queue_problem(const char *vh, slice name, int durable, int exclusive, int auto_delete, slice args, char *err,
                       size_t errlen) {
    int quorum = qtype_is_quorum(args), stream = stream_is(args);
    if (check_values(vh, name, args, 0, err, errlen) < 0 ||
        check_type_support(vh, name, args, quorum, stream, err, errlen) < 0 ||
        check_values(vh, name, args, 1, err, errlen) < 0)
        return -1;
    if (!quorum && !stream) /* both must be durable, not exclusive, not auto-delete */
        return 0;
    const char *prop = auto_delete ? "auto-delete" : exclusive ? "exclusive-owner" : !durable ? "non-durable" : NULL;
    if (prop) {
        snprintf(err, errlen, "invalid property '%s' for queue '%.*s' in vhost '%s'", prop, (int)name.n,
                 (const char *)name.p, vh);
        return -1;
    }
    return 0;
}

int args_check_queue_declare(channel *ch, slice name, int durable, int exclusive, int auto_delete, slice args) {
    char err[1024];
    if (args_queue_problem(ch_vhost(ch), name, durable, exclusive, auto_delete, args, err, sizeof err) == 0)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE, "%s", err);
    return -1;
}

/* How RabbitMQ names one side of an inequivalent argument. */
static void describe(const fval *v, int present, char *out, size_t n) {
    if (!present) {
        snprintf(out, n, "none");
        return;
    }
    char val[128];
    fval_format(v, val, sizeof val);
    snprintf(out, n, "the value '%s' of type '%s'", val, fval_type_name(v->type));
}

/* RabbitMQ compares the arguments it knows on redeclare; a difference is 406. When both
 * sides have the argument it names the two values, otherwise their types too. */
static int check_equivalent(channel *ch, unsigned mid, const char *kind, slice name, slice have, slice got,
                            const char *key) {
    fval a, b;
    int ha = table_get(have, key, &a), hb = table_get(got, key, &b);
    if (ha == hb && (!ha || fval_equal(&a, &b)))
        return 0;
    char ra[192], rb[192];
    if (ha && hb) {
        char va[128], vb[128];
        fval_format(&a, va, sizeof va);
        fval_format(&b, vb, sizeof vb);
        snprintf(rb, sizeof rb, "'%s'", vb);
        snprintf(ra, sizeof ra, "'%s'", va);
    } else {
        describe(&b, hb, rb, sizeof rb);
        describe(&a, ha, ra, sizeof ra);
    }
    channel_close_error(ch, PRECONDITION_FAILED, mid,
                        "inequivalent arg '%s' for %s '%.*s' in vhost '%s': received %s but current is %s", key, kind,
                        (int)name.n, (const char *)name.p, ch_vhost(ch), rb, ra);
    return -1;
}

/* Redeclare of a queue: every argument marked equiv must be equal. */
int args_check_queue_equivalent(channel *ch, slice name, slice have, slice got) {
    for (size_t i = 0; i < ARRAY_LEN(queue_args); i++)
        if (queue_args[i].equiv && check_equivalent(ch, QUEUE_DECLARE, "queue", name, have, got, queue_args[i].name) < 0)
            return -1;
    return 0;
}

/* Redeclare of an exchange: RabbitMQ compares only alternate-exchange. */
int args_check_exchange_equivalent(channel *ch, slice name, slice have, slice got) {
    return check_equivalent(ch, EXCHANGE_DECLARE, "exchange", name, have, got, "alternate-exchange");
}

/* Redeclare: a flag (durable, auto_delete, internal) must be equal (406 otherwise). */
int check_flag(channel *ch, unsigned mid, const char *kind, slice name, const char *arg, int have, int got) {
    if (have == got)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, mid,
                        "inequivalent arg '%s' for %s '%.*s' in vhost '%s': received '%s' but current is '%s'", arg,
                        kind, (int)name.n, (const char *)name.p, ch_vhost(ch), got ? "true" : "false",
                        have ? "true" : "false");
    return -1;
}

/* Headers bindings: x-match must be one RabbitMQ knows. */
int check_x_match(channel *ch, slice args, unsigned mid) {
    fval v;
    if (!table_get(args, "x-match", &v))
        return 0;
    if (fval_is_str(&v) && in_list(" all any all-with-x any-with-x ", v.s))
        return 0;
    char val[128];
    fval_format(&v, val, sizeof val);
    channel_close_error(ch, PRECONDITION_FAILED, mid,
                        "Invalid x-match field value <<\"%s\">>; expected all, any, all-with-x, or any-with-x", val);
    return -1;
}

/* x-consistent-hash bindings: the key is a weight (the plugin's texts). */
int check_chash_key(channel *ch, slice key, unsigned mid) {
    char why[200];
    if (chash_check_binding_key(key, why, sizeof why) == 0)
        return 0;
    channel_close_error(ch, PRECONDITION_FAILED, mid, "%s", why);
    return -1;
}
