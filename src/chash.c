/* chash.c — the x-consistent-hash exchange, routing as RabbitMQ's
 * rabbitmq_consistent_hash_exchange plugin (3.8+) does, bucket for bucket.
 *
 * The plugin keeps, per exchange, a map bucket number -> destination: binding a queue with
 * key "W" (its weight) appends W buckets; unbinding removes every bucket of that destination
 * and moves the buckets after it down (keeping the plugin's quirks: buckets of other
 * destinations lying between the removed ones are lost, and gaps make some hashes
 * unroutable). A message goes to bucket jump_consistent_hash(K, number of buckets) where K is
 * erlang:phash2 of the routing key, or of the header named by the hash-header argument
 * ({Type, Value} as RabbitMQ decodes it, or the atom undefined), or of the property named by
 * hash-property (message_id, correlation_id, or timestamp as a decimal string). The jump
 * hash draws from Erlang's exs1024 generator seeded with {K, K, K}.
 *
 * Reproducing phash2 and exs1024 bit for bit is what makes the same bindings put the same
 * messages in the same queues as RabbitMQ (checked by the differential test). Only the
 * term shapes the plugin can hash are implemented: binaries, integers, floats, atoms and
 * tuples of those; a table or array header value is hashed as its raw bytes instead (a
 * documented difference). */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>

#include "memacct.h"
#include "util.h"

#define MAX_WEIGHT 1000000 /* Ferry's limit per binding; RabbitMQ has none */

struct chring {
    binding **bucket; /* bucket number -> binding (NULL: a gap the plugin leaves) */
    size_t next;      /* the plugin's next_bucket_number */
    size_t count;     /* non-gap buckets: the jump hash's N */
    size_t acct;      /* bytes of bucket counted in memacct (up to 8 MB a binding) */
};

/* The ring's bucket array now holds n entries: tell the memory accounting. */
static void ring_account(struct chring *r, size_t n) {
    size_t bytes = n * sizeof *r->bucket;
    if (bytes >= r->acct)
        memacct_add(MEM_CHASH_RINGS, bytes - r->acct);
    else
        memacct_sub(MEM_CHASH_RINGS, r->acct - bytes);
    r->acct = bytes;
}

/* ---- erlang:phash2 (erts make_hash2, for the terms the plugin hashes) ---- */

#define HCONST 0x9e3779b9u
#define HCONST_2 0x3c6ef372u
#define HCONST_3 0xdaa66d2bu
#define HCONST_9 0x8ff34781u
#define HCONST_10 0x2e2ac13au
#define HCONST_11 0xcc623af3u
#define HCONST_12 0x6a99b4acu
#define HCONST_13 0x08d12e65u

#define MIX(a, b, c)                                                                                                   \
    do {                                                                                                               \
        a -= b, a -= c, a ^= (c >> 13);                                                                                \
        b -= c, b -= a, b ^= (a << 8);                                                                                 \
        c -= a, c -= b, c ^= (b >> 13);                                                                                \
        a -= b, a -= c, a ^= (c >> 12);                                                                                \
        b -= c, b -= a, b ^= (a << 16);                                                                                \
        c -= a, c -= b, c ^= (b >> 5);                                                                                 \
        a -= b, a -= c, a ^= (c >> 3);                                                                                 \
        b -= c, b -= a, b ^= (a << 10);                                                                                \
        c -= a, c -= b, c ^= (b >> 15);                                                                                \
    } while (0)

static void hash2(uint32_t *h, uint32_t x, uint32_t y, uint32_t k) {
    uint32_t a = k + x, b = k + y;
    MIX(a, b, *h);
}

/* Bob Jenkins' block hash as erts uses it for binaries. */
static uint32_t block_hash(const uint8_t *k, size_t length, uint32_t initval) {
    uint32_t a = HCONST, b = HCONST, c = initval;
    size_t len = length;
    while (len >= 12) {
        a += k[0] + ((uint32_t)k[1] << 8) + ((uint32_t)k[2] << 16) + ((uint32_t)k[3] << 24);
        b += k[4] + ((uint32_t)k[5] << 8) + ((uint32_t)k[6] << 16) + ((uint32_t)k[7] << 24);
        c += k[8] + ((uint32_t)k[9] << 8) + ((uint32_t)k[10] << 16) + ((uint32_t)k[11] << 24);
        MIX(a, b, c);
        k += 12, len -= 12;
    }
    c += (uint32_t)length;
    switch (len) { /* every case falls through */
    case 11: c += (uint32_t)k[10] << 24; /* fall through */
    case 10: c += (uint32_t)k[9] << 16;  /* fall through */
    case 9: c += (uint32_t)k[8] << 8;    /* fall through */
    case 8: b += (uint32_t)k[7] << 24;   /* fall through */
    case 7: b += (uint32_t)k[6] << 16;   /* fall through */
    case 6: b += (uint32_t)k[5] << 8;    /* fall through */
    case 5: b += k[4];                   /* fall through */
    case 4: a += (uint32_t)k[3] << 24;   /* fall through */
    case 3: a += (uint32_t)k[2] << 16;   /* fall through */
    case 2: a += (uint32_t)k[1] << 8;    /* fall through */
    case 1: a += k[0];
    }
    MIX(a, b, c);
    return c;
}

static void h_bin(uint32_t *h, const uint8_t *p, size_t n) {
    *h = n ? block_hash(p, n, HCONST_13 + *h) : HCONST_13 + *h; /* erts: an empty binary is not block-hashed */
}

/* An atom's hash is hashpjw of its name (erts atom.c); mixed in unless it comes first. */
static void h_atom(uint32_t *h, const char *name) {
    uint32_t v = 0, g;
    for (const char *p = name; *p; p++) {
        v = (v << 4) + (uint8_t)*p;
        if ((g = v & 0xf0000000u))
            v ^= g >> 24, v ^= g;
    }
    if (*h == 0)
        *h = v;
    else
        hash2(h, v, 0, HCONST_3);
}

static void h_int(uint32_t *h, int neg, uint64_t mag) {
    if (!neg && mag < (1u << 27)) {
        hash2(h, (uint32_t)mag, 0, HCONST);
    } else if (neg && mag <= (1u << 27)) { /* negatives are mixed twice, as erts does */
        hash2(h, (uint32_t)mag, 0, HCONST);
        hash2(h, (uint32_t)-(int32_t)mag, 0, HCONST);
    } else { /* beyond 28 bits (a big small or a one-digit bignum): magnitude and sign */
        hash2(h, (uint32_t)mag, (uint32_t)(mag >> 32), neg ? HCONST_10 : HCONST_11);
    }
}

static void h_sint(uint32_t *h, int64_t v) { h_int(h, v < 0, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v); }

static void h_float(uint32_t *h, double d) {
    if (d == 0.0)
        d = 0.0; /* positive zero */
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    hash2(h, (uint32_t)(bits >> 32), (uint32_t)bits, HCONST_12);
}

static void h_tuple(uint32_t *h, uint32_t arity) { hash2(h, arity, 0, HCONST_9); }

uint32_t chash_phash2_binary(const uint8_t *p, size_t n) {
    uint32_t h = 0;
    h_bin(&h, p, n);
    return h & ((1u << 27) - 1);
}

/* phash2 of a header value as RabbitMQ decodes it: {Type, Value}. */
static uint32_t phash2_header(const fval *v) {
    static const struct {
        char code;
        const char *atom;
    } types[] = {{'S', "longstr"}, {'x', "binary"},    {'b', "byte"},   {'B', "unsignedbyte"}, {'s', "short"},
                 {'u', "unsignedshort"}, {'I', "signedint"}, {'i', "unsignedint"}, {'l', "long"}, {'L', "long"},
                 {'T', "timestamp"}, {'d', "double"}, {'f', "float"}, {'t', "bool"}, {'D', "decimal"},
                 {'V', "void"},      {'F', "table"},  {'A', "array"}};
    const char *atom = "undefined";
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        if (types[i].code == v->type)
            atom = types[i].atom;
    uint32_t h = 0;
    h_tuple(&h, 2);
    h_atom(&h, atom);
    switch (v->type) {
    case 'S':
    case 'x':
    case 'F':
    case 'A': h_bin(&h, v->s.p, v->s.n); break;
    case 'T': h_int(&h, 0, (uint64_t)v->i); break;
    case 'd':
    case 'f': h_float(&h, v->d); break;
    case 't': h_atom(&h, v->i ? "true" : "false"); break;
    case 'V': h_atom(&h, "undefined"); break;
    case 'D':
        h_tuple(&h, 2);
        h_sint(&h, v->dec_scale);
        h_sint(&h, v->dec_value);
        break;
    default: h_sint(&h, v->i);
    }
    return h & ((1u << 27) - 1);
}

static uint32_t phash2_undefined(void) {
    uint32_t h = 0;
    h_atom(&h, "undefined");
    return h & ((1u << 27) - 1);
}

/* ---- Erlang's exs1024 and the plugin's jump consistent hash ---- */

static uint64_t exs64_next(uint64_t *r) {
    uint64_t r1 = *r ^ (*r >> 12);
    uint64_t r2 = r1 ^ ((r1 & ((1ull << 39) - 1)) << 25);
    uint64_t r3 = r2 ^ (r2 >> 27);
    *r = r3;
    return r3 * 2685821657736338717ull;
}

/* rand's state {L, RL}: L is consumed from the front, RL collects in reverse. */
typedef struct {
    uint64_t l[16], rl[16];
    int nl, lh, nrl;
} exs1024;

static void exs1024_seed(exs1024 *s, uint64_t a) {
    uint64_t m = (1u << 21) - 1;
    uint64_t b1 = ((a & m) + 1) * 2097131 & m, b2 = ((a & m) + 1) * 2097133 & m, b3 = ((a & m) + 1) * 2097143 & m;
    uint64_t r = b1 << 43 | b2 << 22 | b3 << 1 | 1;
    for (int i = 0; i < 16; i++) /* each new value goes to the front of the list */
        s->l[15 - i] = exs64_next(&r);
    s->nl = 16, s->lh = 0, s->nrl = 0;
}

static uint64_t exs1024_next(exs1024 *s) {
    if (s->nl == 1) { /* [H] -> [H | reverse(RL)] */
        uint64_t l[16];
        l[0] = s->l[s->lh];
        for (int i = 0; i < s->nrl; i++)
            l[1 + i] = s->rl[s->nrl - 1 - i];
        s->nl = 1 + s->nrl;
        memcpy(s->l, l, sizeof l);
        s->lh = 0, s->nrl = 0;
    }
    uint64_t s0 = s->l[s->lh], s1 = s->l[s->lh + 1];
    uint64_t s11 = s1 ^ ((s1 & ((1ull << 33) - 1)) << 31);
    uint64_t s12 = s11 ^ (s11 >> 11);
    uint64_t s01 = s0 ^ (s0 >> 30);
    uint64_t ns1 = s01 ^ s12;
    s->rl[s->nrl++] = s0;
    s->lh++, s->nl--;
    s->l[s->lh] = ns1;
    return ns1 * 1181783497276652981ull;
}

uint32_t chash_jump(uint32_t key, uint32_t buckets) {
    if (buckets <= 1)
        return 0;
    exs1024 s;
    exs1024_seed(&s, key);
    int64_t b = -1;
    double j = 0;
    while (j < buckets) {
        b = (int64_t)j;
        /* rand:uniform_s for exs1024: V / 2^64 in floating point */
        double r = (double)exs1024_next(&s) / 18446744073709551616.0;
        if (r == 0.0)
            break;
        j = (double)(b + 1) / r;
    }
    return (uint32_t)b;
}

/* ---- the ring ---- */

static struct chring *ring_of(exchange *x) {
    if (!x->ring)
        x->ring = xcalloc(1, sizeof *x->ring);
    return x->ring;
}

static int same_dest(const binding *a, const binding *b) { return a->q == b->q && a->dstx == b->dstx; }

static long weight_of(slice key) {
    long w = 0;
    size_t i = key.n && (key.p[0] == '+' || key.p[0] == '-') ? 1 : 0;
    for (; i < key.n && w <= MAX_WEIGHT; i++)
        w = w * 10 + (key.p[i] - '0');
    return key.n && key.p[0] == '-' ? -w : w;
}

void chash_binding_added(exchange *x, binding *bd) {
    struct chring *r = ring_of(x);
    long w = weight_of((slice){(const uint8_t *)bd->key, bd->key_len});
    r->bucket = xrealloc(r->bucket, (r->next + (size_t)w + 1) * sizeof *r->bucket);
    ring_account(r, r->next + (size_t)w + 1);
    for (long i = 0; i < w; i++)
        r->bucket[r->next++] = bd;
    r->count += (size_t)w;
}

void chash_binding_removed(exchange *x, binding *bd) {
    struct chring *r = x->ring;
    if (!r)
        return;
    size_t first = SIZE_MAX, last = 0, n = 0;
    for (size_t i = 0; i < r->next; i++) {
        if (r->bucket[i] && same_dest(r->bucket[i], bd)) {
            if (first == SIZE_MAX)
                first = i;
            last = i;
            n++;
        }
    }
    if (!n)
        return;
    /* The plugin: buckets before the first stay, buckets after the last move down by n,
     * anything in between goes. */
    size_t next = r->next - n;
    binding **nb = xcalloc(next + 1, sizeof *nb);
    for (size_t i = 0; i < first; i++)
        nb[i] = r->bucket[i];
    for (size_t i = last + 1; i < r->next; i++)
        nb[i - n] = r->bucket[i];
    free(r->bucket);
    r->bucket = nb;
    ring_account(r, next + 1);
    r->next = next;
    r->count = 0;
    for (size_t i = 0; i < next; i++)
        r->count += nb[i] != NULL;
}

binding *chash_pick(exchange *x, const message *m, slice headers) {
    struct chring *r = x->ring;
    if (!r || !r->count)
        return NULL;
    slice args = {x->args, x->args_len};
    fval hv, pv;
    uint32_t k;
    if (args.n && table_get(args, "hash-header", &hv) && fval_is_str(&hv)) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)hv.s.n, (const char *)hv.s.p);
        fval v;
        k = headers.n && table_get(headers, name, &v) ? phash2_header(&v) : phash2_undefined();
    } else if (args.n && table_get(args, "hash-property", &pv) && fval_is_str(&pv)) {
        props_view p;
        slice val = {NULL, 0};
        char ts[32];
        int have = 0;
        props_parse((slice){msg_props(m), m->props_len}, &p);
        if (slice_eqs(pv.s, "message_id") && (p.flags & PROP_MESSAGE_ID))
            val = p.message_id, have = 1;
        else if (slice_eqs(pv.s, "correlation_id") && (p.flags & PROP_CORRELATION_ID))
            val = p.correlation_id, have = 1;
        else if (slice_eqs(pv.s, "timestamp") && (p.flags & PROP_TIMESTAMP)) {
            int n = snprintf(ts, sizeof ts, "%llu", (unsigned long long)p.timestamp);
            val = (slice){(const uint8_t *)ts, (size_t)n}, have = 1;
        }
        k = have ? chash_phash2_binary(val.p, val.n) : phash2_undefined();
    } else {
        k = chash_phash2_binary((const uint8_t *)msg_rkey(m), m->rkey_len);
    }
    uint32_t b = chash_jump(k, (uint32_t)r->count);
    return b < r->next ? r->bucket[b] : NULL; /* a gap: unroutable, as in the plugin */
}

void chash_free(exchange *x) {
    if (!x->ring)
        return;
    ring_account(x->ring, 0);
    free(x->ring->bucket);
    free(x->ring);
    x->ring = NULL;
}

int chash_check_args(slice args, char *why, size_t n) {
    fval h, p;
    int hh = args.n && table_get(args, "hash-header", &h), hp = args.n && table_get(args, "hash-property", &p);
    if ((hh && !fval_is_str(&h)) || (hp && !fval_is_str(&p))) {
        snprintf(why, n, "hash-header and hash-property must be strings");
        return -1;
    }
    if (hh && hp) {
        snprintf(why, n, "hash-header and hash-property are mutually exclusive");
        return -1;
    }
    if (hp && !slice_eqs(p.s, "correlation_id") && !slice_eqs(p.s, "message_id") && !slice_eqs(p.s, "timestamp")) {
        snprintf(why, n, "Unsupported property: %.*s", (int)MIN(p.s.n, 100), (const char *)p.s.p);
        return -1;
    }
    return 0;
}

int chash_check_binding_key(slice key, char *why, size_t n) {
    size_t i = key.n && (key.p[0] == '+' || key.p[0] == '-') ? 1 : 0;
    int ok = i < key.n;
    for (size_t j = i; ok && j < key.n; j++)
        ok = key.p[j] >= '0' && key.p[j] <= '9';
    if (!ok) {
        char oct[160];
        wire_format_octets(key.p, key.n, oct, sizeof oct);
        snprintf(why, n, "The binding key must be an integer: %s", oct);
        return -1;
    }
    long w = weight_of(key);
    if (w < 1) {
        snprintf(why, n, "The binding key must be greater than 0");
        return -1;
    }
    if (w > MAX_WEIGHT) {
        snprintf(why, n, "The binding key must be at most %d (Ferry's limit on a binding's weight)", MAX_WEIGHT);
        return -1;
    }
    return 0;
}
