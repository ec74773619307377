/* Unit tests for the consistent-hash exchange's hashing: erlang:phash2 of binaries and
 * the plugin's jump consistent hash over Erlang's exs1024, against values computed by
 * Erlang/OTP 25 itself (erlang:phash2/1 and the plugin's jump_consistent_hash/2). */
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "unit.h"


static const struct {
    const char *key;
    uint32_t phash2;
    uint32_t bucket[5]; /* for 2, 3, 4, 7 and 100 buckets */
} vectors[] = {
    {"", 13708901, {0, 0, 0, 6, 45}},
    {"a", 112802447, {1, 1, 1, 6, 47}},
    {"abc", 98228475, {1, 1, 1, 5, 88}},
    {"hello world!", 25699699, {0, 0, 0, 6, 42}},
    {"0123456789abcdef-long-key", 129603308, {0, 0, 0, 0, 99}},
    {"entity-42", 10025772, {0, 0, 0, 6, 67}},
};

static void test_phash2_of_binaries_matches_erlang(void) {
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
        CHECK(chash_phash2_binary((const uint8_t *)vectors[i].key, strlen(vectors[i].key)) == vectors[i].phash2);
}

static void test_jump_consistent_hash_matches_the_plugin(void) {
    static const uint32_t n[5] = {2, 3, 4, 7, 100};
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
        for (int j = 0; j < 5; j++)
            CHECK(chash_jump(vectors[i].phash2, n[j]) == vectors[i].bucket[j]);
    CHECK(chash_jump(12345, 1) == 0);
}

static void test_binding_keys_are_positive_integer_weights(void) {
    char why[200];
    CHECK(chash_check_binding_key((slice){(const uint8_t *)"10", 2}, why, sizeof why) == 0);
    CHECK(chash_check_binding_key((slice){(const uint8_t *)"0", 1}, why, sizeof why) < 0);
    CHECK(strstr(why, "greater than 0"));
    CHECK(chash_check_binding_key((slice){(const uint8_t *)"x1", 2}, why, sizeof why) < 0);
    CHECK(strstr(why, "must be an integer"));
    CHECK(chash_check_binding_key((slice){(const uint8_t *)"", 0}, why, sizeof why) < 0);
}

static const unit_test tests[] = {
#define T(f) {#f, f}
    T(test_phash2_of_binaries_matches_erlang),
    T(test_jump_consistent_hash_matches_the_plugin),
    T(test_binding_keys_are_positive_integer_weights),
};

int main(void) { return unit_run(tests, sizeof tests / sizeof tests[0]); }
