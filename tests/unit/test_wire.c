/* Unit tests for the wire codec, topic matching and the name map: the pieces whose edge
 * cases are easiest to pin down without a socket. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "unit.h"
#include "wire.h"


static void test_frame_roundtrip_and_partial_input(void) {
    buf b;
    buf_init(&b);
    size_t m = method_begin(&b, 7, QUEUE_DECLARE);
    buf_shortstr(&b, "q", 1);
    frame_end(&b, m);
    frame f;
    const char *why = NULL;
    CHECK(wire_parse_frame(buf_head(&b), b.len - 1, 131072, &f, &why) == 0); /* one byte short */
    long n = wire_parse_frame(buf_head(&b), b.len, 131072, &f, &why);
    CHECK(n == (long)b.len);
    CHECK(f.type == FRAME_METHOD && f.channel == 7 && f.size == 6);
    buf_free(&b);
}

static void test_frame_with_bad_end_octet_is_an_error(void) {
    uint8_t raw[] = {1, 0, 1, 0, 0, 0, 1, 9, 0x00};
    frame f;
    const char *why = NULL;
    CHECK(wire_parse_frame(raw, sizeof raw, 131072, &f, &why) == WIRE_BAD_END);
    CHECK(why && strstr(why, "frame end"));
}

static void test_frame_larger_than_frame_max_is_an_error_before_it_arrives(void) {
    uint8_t raw[] = {3, 0, 1, 0, 1, 0, 0}; /* claims 65536 bytes */
    frame f;
    const char *why = NULL;
    CHECK(wire_parse_frame(raw, sizeof raw, 4096, &f, &why) == WIRE_TOO_LARGE);
    CHECK(f.size == 65536);
}

static void test_octets_are_formatted_as_rabbitmq_prints_binaries(void) {
    char out[64];
    wire_format_octets((const uint8_t *)"abc", 3, out, sizeof out);
    CHECK(strcmp(out, "<<\"abc\">>") == 0);
    const uint8_t raw[] = {0, 60, 0};
    wire_format_octets(raw, 3, out, sizeof out);
    CHECK(strcmp(out, "<<0,60,0>>") == 0);
    wire_format_octets(raw, 0, out, sizeof out);
    CHECK(strcmp(out, "<<>>") == 0);
}

static void test_unsigned_64_bit_integers_from_py_amqp_are_accepted(void) {
    uint8_t t[] = {3, 'b', 'i', 'g', 'L', 0, 0, 1, 0, 0, 0, 0, 0};
    fval v;
    CHECK(table_validate((slice){t, sizeof t}) == 0);
    CHECK(table_get((slice){t, sizeof t}, "big", &v) && v.i == (1LL << 40));
}

static void test_table_with_every_type_validates_and_finds_keys(void) {
    buf t;
    buf_init(&t);
    table_put_longstr(&t, "s", "hello", 5);
    table_put_bool(&t, "b", 1);
    buf_shortstr(&t, "i", 1), buf_u8(&t, 'I'), buf_u32(&t, (uint32_t)-5);
    buf_shortstr(&t, "l", 1), buf_u8(&t, 'l'), buf_u64(&t, 1ULL << 40);
    buf_shortstr(&t, "v", 1), buf_u8(&t, 'V');
    buf_shortstr(&t, "d", 1), buf_u8(&t, 'D'), buf_u8(&t, 2), buf_u32(&t, 12345);
    buf inner;
    buf_init(&inner);
    table_put_bool(&inner, "x", 0);
    table_put_table(&t, "nested", buf_head(&inner), inner.len);
    slice s = {buf_head(&t), t.len};
    CHECK(table_validate(s) == 0);
    fval v;
    CHECK(table_get(s, "i", &v) && v.type == 'I' && v.i == -5);
    CHECK(table_get(s, "l", &v) && v.i == (int64_t)(1ULL << 40));
    CHECK(table_get(s, "s", &v) && slice_eqs(v.s, "hello"));
    CHECK(table_get(s, "nested", &v) && v.type == 'F' && table_validate(v.s) == 0);
    CHECK(!table_get(s, "missing", &v));
    buf_free(&t);
    buf_free(&inner);
}

static void test_table_with_unknown_type_or_overlong_length_is_rejected(void) {
    uint8_t bad_type[] = {1, 'k', 'Z', 0};
    CHECK(table_validate((slice){bad_type, sizeof bad_type}) < 0);
    uint8_t long_str[] = {1, 'k', 'S', 0, 0, 0, 50, 'a'};
    CHECK(table_validate((slice){long_str, sizeof long_str}) < 0);
    uint8_t short_key[] = {9, 'k'};
    CHECK(table_validate((slice){short_key, sizeof short_key}) < 0);
}

static void test_deeply_nested_tables_are_refused_not_recursed_forever(void) {
    /* 100 nested tables: the validator stops at its depth limit. */
    size_t depth = 100, per = 1 + 1 + 1 + 4;
    size_t n = depth * per;
    uint8_t *p = calloc(1, n);
    for (size_t i = 0; i < depth; i++) {
        uint8_t *q = p + i * per;
        uint32_t len = (uint32_t)(n - (i + 1) * per);
        q[0] = 1, q[1] = 'k', q[2] = 'F';
        q[3] = (uint8_t)(len >> 24), q[4] = (uint8_t)(len >> 16), q[5] = (uint8_t)(len >> 8), q[6] = (uint8_t)len;
    }
    CHECK(table_validate((slice){p, n}) < 0);
    free(p);
}

static void test_integer_arguments_compare_equal_across_integer_types(void) {
    fval a = {.type = 'I', .i = 1000}, b = {.type = 'l', .i = 1000}, c = {.type = 'S'};
    CHECK(fval_equal(&a, &b));
    c.s = slice_str("1000");
    CHECK(!fval_equal(&a, &c));
}

static void test_properties_parse_finds_reply_to_and_rejects_trailing_bytes(void) {
    buf b;
    buf_init(&b);
    buf_u16(&b, PROP_DELIVERY_MODE | PROP_REPLY_TO);
    buf_u8(&b, 2);
    buf_shortstr(&b, "amq.rabbitmq.reply-to", 21);
    props_view pv;
    CHECK(props_parse((slice){buf_head(&b), b.len}, &pv) == 0);
    CHECK(pv.delivery_mode == 2 && slice_eqs(pv.reply_to, "amq.rabbitmq.reply-to"));
    buf_u8(&b, 0);
    CHECK(props_parse((slice){buf_head(&b), b.len}, &pv) < 0);
    buf_free(&b);
}

static int tm(const char *p, const char *k) { return topic_match(p, strlen(p), k, strlen(k)); }

static void test_topic_patterns_match_as_rabbitmq_does(void) {
    CHECK(tm("a.*.c", "a.b.c"));
    CHECK(!tm("a.*.c", "a.c"));
    CHECK(tm("a.#", "a"));
    CHECK(tm("a.#", "a.b.c"));
    CHECK(tm("#", ""));
    CHECK(tm("#", "x.y"));
    CHECK(tm("#.c", "c"));
    CHECK(tm("a.#.c", "a.c"));
    CHECK(tm("a.#.c", "a.b.b.c"));
    CHECK(!tm("a.#.c", "a.b.d"));
    CHECK(!tm("*", ""));
    CHECK(tm("*", "a"));
    CHECK(tm("a..b", "a..b"));
    CHECK(tm("a.*.b", "a..b"));
    CHECK(!tm("a.b", "a.b.c"));
    CHECK(tm("#.#.#", "a.b"));
    CHECK(tm("*.#", "a"));
    CHECK(!tm("*.*", "a"));
}

static void test_map_put_get_delete_and_grow(void) {
    map m;
    map_init(&m);
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        map_put(&m, key, strlen(key), (void *)(long)(i + 1));
    }
    CHECK(m.count == 1000);
    CHECK(map_get(&m, "k500", 4) == (void *)501L);
    for (int i = 0; i < 1000; i += 2) {
        snprintf(key, sizeof key, "k%d", i);
        map_del(&m, key, strlen(key));
    }
    CHECK(m.count == 500);
    CHECK(map_get(&m, "k500", 4) == NULL);
    CHECK(map_get(&m, "k501", 4) == (void *)502L);
    map_free(&m);
}

/* Keys that come and go (1,000,000 put and deleted, never more than 10 live) leave the map
 * the size its live keys need: rehashing clears tombstones instead of doubling each time (it
 * grew to about 700,000 slots before). A slot cursor's gen changes at each rehash. */
static void test_map_churn_does_not_grow_it(void) {
    map m;
    map_init(&m);
    char key[32];
    uint64_t gen0 = m.gen;
    int gens = 0;
    uint64_t last = m.gen;
    for (int i = 0; i < 1000000; i++) {
        snprintf(key, sizeof key, "churn-%d", i);
        map_put(&m, key, strlen(key), (void *)1L);
        if (i >= 10) {
            snprintf(key, sizeof key, "churn-%d", i - 10);
            CHECK(map_del(&m, key, strlen(key)) == (void *)1L);
        }
        if (m.gen != last) {
            gens++;
            last = m.gen;
        }
    }
    CHECK(m.count == 10);
    CHECK(m.cap <= 64);
    CHECK(gens > 0 && m.gen != gen0);
    CHECK(map_get(&m, "churn-999999", 12) == (void *)1L);
    CHECK(map_get(&m, "churn-999989", 12) == NULL);
    map_free(&m);
}

/* The SipHash reference vectors (key 00..0f, message 00..n-1): the map's keyed hash is
 * the same function with 1 compression and 3 final rounds. Two keys differ in hash_bytes
 * only through the process's random key, so equal bytes still hash equal. */
static void test_siphash24_reference_vectors_and_keyed_hash_is_consistent(void) {
    uint8_t key[16], msg[16];
    for (int i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    CHECK(siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
    CHECK(siphash24(key, msg, 8) == 0x93f5f5799a932462ULL);
    CHECK(siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
    CHECK(hash_bytes("queue-a", 7) == hash_bytes("queue-a", 7));
    CHECK(hash_bytes("queue-a", 7) != hash_bytes("queue-b", 7));
}

/* The topic trie routes exactly as topic_match (the reference): random patterns and keys
 * over a tiny vocabulary (so that wildcards, empty words and repeats meet often), checked
 * binding by binding; then every binding is removed and the trie is empty again. */
static size_t trie_hits;
static binding *trie_hit[64];
static void trie_collect(binding *bd) {
    if (trie_hits < 64)
        trie_hit[trie_hits] = bd;
    trie_hits++;
}

/* Collects every binding handed over, so a test can check each came exactly once. */
static binding *all_hit[4096];
static void trie_collect_all(binding *bd) {
    if (trie_hits < 4096)
        all_hit[trie_hits] = bd;
    trie_hits++;
}
/* Counts how many times each of bd[0..n) was handed over since trie_hits was reset (each
 * matching one must be exactly once: the trie's visited marks). */
static void count_hits(const binding *bd, size_t n, unsigned char *cnt) {
    memset(cnt, 0, n);
    for (size_t j = 0; j < trie_hits && j < 4096; j++)
        if (all_hit[j] >= bd && all_hit[j] < bd + n && cnt[all_hit[j] - bd] < 255)
            cnt[all_hit[j] - bd]++;
}

static void random_words(char *out, size_t cap, int wild, unsigned *seed) {
    static const char *vocab[] = {"a", "b", "", "*", "#"};
    int n = rand_r(seed) % 5;
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *w = vocab[rand_r(seed) % (wild ? 5 : 3)];
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "." : "", w);
    }
}

static void test_topic_trie_routes_as_topic_match(void) {
    enum { NB = 40, NKEYS = 400 };
    exchange x = {0};
    binding bd[NB];
    char pat[NB][64], key[64];
    unsigned seed = 7;
    memset(bd, 0, sizeof bd);
    for (int i = 0; i < NB; i++) {
        random_words(pat[i], sizeof pat[i], 1, &seed);
        bd[i].key = pat[i];
        bd[i].key_len = strlen(pat[i]);
        topic_add(&x, &bd[i]);
    }
    int bad = 0;
    for (int k = 0; k < NKEYS; k++) {
        random_words(key, sizeof key, 0, &seed);
        trie_hits = 0;
        size_t n = topic_route(&x, key, strlen(key), trie_collect);
        size_t want = 0;
        for (int i = 0; i < NB; i++) {
            int m = topic_match(pat[i], strlen(pat[i]), key, strlen(key));
            want += (size_t)m;
            int found = 0;
            for (size_t j = 0; j < trie_hits && j < 64; j++)
                found |= trie_hit[j] == &bd[i];
            if (found != m && bad++ < 5)
                fprintf(stderr, "  pattern '%s' key '%s': trie %d, topic_match %d\n", pat[i], key, found, m);
        }
        CHECK(n == want && n == trie_hits);
    }
    CHECK(bad == 0);
    for (int i = 0; i < NB; i++)
        topic_remove(&x, &bd[i]);
    trie_hits = 0;
    CHECK(topic_route(&x, "a", 1, trie_collect) == 0);
    topic_free(&x);
}

/* A third matcher, written the obvious way (backtracking over words, as the AMQP spec words
 * it): independent of both topic_match's table and the trie, so a shared misreading of the
 * rules cannot pass unnoticed. Exponential in '#'s, so only for short patterns. */
static int ref_match(const char **pw, const size_t *pl, int np, const char **kw, const size_t *kl, int nk) {
    if (np == 0)
        return nk == 0;
    if (pl[0] == 1 && pw[0][0] == '#')
        return ref_match(pw + 1, pl + 1, np - 1, kw, kl, nk) || (nk > 0 && ref_match(pw, pl, np, kw + 1, kl + 1, nk - 1));
    if (nk == 0)
        return 0;
    if ((pl[0] == 1 && pw[0][0] == '*') || (pl[0] == kl[0] && memcmp(pw[0], kw[0], kl[0]) == 0))
        return ref_match(pw + 1, pl + 1, np - 1, kw + 1, kl + 1, nk - 1);
    return 0;
}

/* Splits on '.'; an empty string is no words at all (RabbitMQ), "." is two empty words. */
static int words(const char *s, const char **w, size_t *l) {
    if (!*s)
        return 0;
    int n = 0;
    const char *start = s;
    for (;; s++) {
        if (*s == '.' || !*s) {
            w[n] = start;
            l[n++] = (size_t)(s - start);
            if (!*s)
                return n;
            start = s + 1;
        }
    }
}

static int ref(const char *pattern, const char *key) {
    const char *pw[64], *kw[64];
    size_t pl[64], kl[64];
    int np = words(pattern, pw, pl), nk = words(key, kw, kl);
    return ref_match(pw, pl, np, kw, kl, nk);
}

static void random_key(char *out, size_t cap, int max_words, int wild, unsigned *seed) {
    static const char *vocab[] = {"a", "b", "", "ab", "*", "#"};
    int n = rand_r(seed) % (max_words + 1);
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *w = vocab[rand_r(seed) % (wild ? 6 : 4)];
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "." : "", w);
    }
}

/* Randomized differential test (issue 14): 600 bindings with random patterns of up to 6
 * words over a vocabulary with empty words, '*' and '#' (so "#.#", "*.#.*", "a..#" and
 * duplicates all occur), 1,500 random keys of up to 7 words (many dots, empty words, the
 * empty key). For every key and binding the trie, topic_match and the backtracking
 * reference must agree; the trie must hand each matching binding over exactly once. */
static void test_topic_trie_matcher_and_backtracking_reference_agree_on_random_input(void) {
    enum { NB = 600, NKEYS = 1500 };
    exchange x = {0};
    static binding bd[NB];
    static char pat[NB][64];
    static unsigned char hits[NB];
    char key[96];
    unsigned seed = 20261203;
    memset(bd, 0, sizeof bd);
    for (int i = 0; i < NB; i++) {
        random_key(pat[i], sizeof pat[i], 6, 1, &seed);
        bd[i].key = pat[i];
        bd[i].key_len = strlen(pat[i]);
        topic_add(&x, &bd[i]);
    }
    int bad = 0;
    for (int k = 0; k < NKEYS; k++) {
        random_key(key, sizeof key, 7, 0, &seed);
        trie_hits = 0;
        size_t n = topic_route(&x, key, strlen(key), trie_collect_all);
        count_hits(bd, NB, hits);
        size_t want = 0;
        for (int i = 0; i < NB; i++) {
            int r = ref(pat[i], key);
            int m = topic_match(pat[i], strlen(pat[i]), key, strlen(key));
            want += (size_t)r;
            int got = hits[i];
            if ((r != m || got != r) && bad++ < 5)
                fprintf(stderr, "  pattern '%s' key '%s': reference %d, topic_match %d, trie %d\n", pat[i], key, r, m,
                        got);
        }
        CHECK(n == want);
    }
    CHECK(bad == 0);
    for (int i = 0; i < NB; i++)
        topic_remove(&x, &bd[i]);
    CHECK(topic_route(&x, "a", 1, trie_collect_all) == 0);
    topic_free(&x);
}

/* Hostile patterns: "#.#.#..." (100 '#'), "#.a.#.a..." and a '*' chain, against keys of 200
 * words. A backtracking matcher needs ~2^100 steps here; the trie visits each node at most
 * once per key position. Results are checked against topic_match (the table matcher, also
 * polynomial); the time bound is 100 x looser than what the trie needs even under ASan,
 * and astronomically tighter than backtracking. */
static void test_topic_trie_routes_hostile_hash_patterns_in_bounded_work(void) {
    static char hashes[400], alt[600], stars[600], key_a[500], key_b[500];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(hashes + n, sizeof hashes - n, "%s#", i ? "." : "");
    n = 0;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(alt + n, sizeof alt - n, "%s#.a", i ? "." : "");
    n = 0;
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(stars + n, sizeof stars - n, "%s*", i ? "." : "");
    n = 0;
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(key_a + n, sizeof key_a - n, "%sa", i ? "." : "");
    memcpy(key_b, key_a, sizeof key_b);
    key_b[strlen(key_b) - 1] = 'b'; /* the last word differs: "#.a" patterns fail at the end */
    const char *pats[] = {hashes, alt, stars, "#", "#.b", "a.#.b"};
    enum { NP = 6 };
    exchange x = {0};
    binding bd[NP];
    memset(bd, 0, sizeof bd);
    for (int i = 0; i < NP; i++) {
        bd[i].key = (char *)pats[i];
        bd[i].key_len = strlen(pats[i]);
        topic_add(&x, &bd[i]);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 50; round++) {
        const char *keys[] = {key_a, key_b};
        for (int k = 0; k < 2; k++) {
            static unsigned char hits[NP];
            trie_hits = 0;
            size_t got = topic_route(&x, keys[k], strlen(keys[k]), trie_collect_all);
            count_hits(bd, NP, hits);
            size_t want = 0;
            for (int i = 0; i < NP; i++) {
                int m = topic_match(pats[i], strlen(pats[i]), keys[k], strlen(keys[k]));
                want += (size_t)m;
                CHECK(hits[i] == m);
            }
            CHECK(got == want);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(s < 30.0);
    /* the expected answers, spelled out once */
    CHECK(topic_match(hashes, strlen(hashes), key_a, strlen(key_a)) == 1);
    CHECK(topic_match(alt, strlen(alt), key_b, strlen(key_b)) == 0);
    CHECK(topic_match(stars, strlen(stars), key_a, strlen(key_a)) == 0); /* 150 '*' need 150 words */
    for (int i = 0; i < NP; i++)
        topic_remove(&x, &bd[i]);
    topic_free(&x);
}

static const unit_test tests[] = {
#define T(f) {#f, f}
    T(test_frame_roundtrip_and_partial_input),
    T(test_frame_with_bad_end_octet_is_an_error),
    T(test_frame_larger_than_frame_max_is_an_error_before_it_arrives),
    T(test_octets_are_formatted_as_rabbitmq_prints_binaries),
    T(test_unsigned_64_bit_integers_from_py_amqp_are_accepted),
    T(test_table_with_every_type_validates_and_finds_keys),
    T(test_table_with_unknown_type_or_overlong_length_is_rejected),
    T(test_deeply_nested_tables_are_refused_not_recursed_forever),
    T(test_integer_arguments_compare_equal_across_integer_types),
    T(test_properties_parse_finds_reply_to_and_rejects_trailing_bytes),
    T(test_topic_patterns_match_as_rabbitmq_does),
    T(test_map_put_get_delete_and_grow),
    T(test_map_churn_does_not_grow_it),
    T(test_siphash24_reference_vectors_and_keyed_hash_is_consistent),
    T(test_topic_trie_routes_as_topic_match),
    T(test_topic_trie_matcher_and_backtracking_reference_agree_on_random_input),
    T(test_topic_trie_routes_hostile_hash_patterns_in_bounded_work),
};

int main(void) { return unit_run(tests, sizeof tests / sizeof tests[0]); }
