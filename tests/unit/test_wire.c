/* Unit tests for the wire codec, topic matching and the name map: the pieces whose edge
 * cases are easiest to pin down without a socket. */
#include <stdlib.h>
#include <string.h>

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
    T(test_siphash24_reference_vectors_and_keyed_hash_is_consistent),
    T(test_topic_trie_routes_as_topic_match),
};

int main(void) { return unit_run(tests, sizeof tests / sizeof tests[0]); }
