/* seqtest.c — per-aggregate sequence gap detection (include/ferry/seq.h) and the envelope
 * round trip (include/ferry/envelope.h), no broker needed. Prints "ok NAME" / "FAIL NAME". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/envelope.h"
#include "ferry/seq.h"

static int failures;
#define CHECK(name, cond)                                                                                              \
    do {                                                                                                               \
        if (cond)                                                                                                      \
            printf("ok %s\n", name);                                                                                   \
        else {                                                                                                         \
            printf("FAIL %s (line %d)\n", name, __LINE__);                                                             \
            failures++;                                                                                                \
        }                                                                                                              \
    } while (0)

int main(void) {
    ferry_seq *s = ferry_seq_new();
    int64_t a = 0, b = 0;
    CHECK("first_is_1", ferry_seq_check(s, "order-1", 1, &a, &b) == FERRY_SEQ_NEXT);
    CHECK("in_order", ferry_seq_check(s, "order-1", 2, &a, &b) == FERRY_SEQ_NEXT);
    CHECK("duplicate", ferry_seq_check(s, "order-1", 2, &a, &b) == FERRY_SEQ_DUPLICATE);
    CHECK("old_is_duplicate", ferry_seq_check(s, "order-1", 1, &a, &b) == FERRY_SEQ_DUPLICATE);
    CHECK("gap", ferry_seq_check(s, "order-1", 6, &a, &b) == FERRY_SEQ_GAP && a == 3 && b == 5);
    CHECK("after_gap_moves_on", ferry_seq_check(s, "order-1", 7, &a, &b) == FERRY_SEQ_NEXT);
    CHECK("late_event_of_gap_is_duplicate", ferry_seq_check(s, "order-1", 4, &a, &b) == FERRY_SEQ_DUPLICATE);
    CHECK("aggregates_independent", ferry_seq_check(s, "order-2", 1, &a, &b) == FERRY_SEQ_NEXT);
    CHECK("new_aggregate_starting_late_is_gap",
          ferry_seq_check(s, "order-3", 3, &a, &b) == FERRY_SEQ_GAP && a == 1 && b == 2);
    CHECK("expected", ferry_seq_expected(s, "order-1") == 8 && ferry_seq_expected(s, "nobody") == 1);
    CHECK("set", ferry_seq_set(s, "order-9", 100) == 0 && ferry_seq_check(s, "order-9", 100, NULL, NULL) == FERRY_SEQ_NEXT);
    CHECK("zero_invalid", ferry_seq_check(s, "order-1", 0, &a, &b) == FERRY_EINVAL);
    CHECK("negative_invalid", ferry_seq_check(s, "order-1", -5, &a, &b) == FERRY_EINVAL);
    CHECK("max_invalid", ferry_seq_check(s, "order-1", INT64_MAX, &a, &b) == FERRY_EINVAL);
    CHECK("null_aggregate", ferry_seq_check(s, NULL, 1, &a, &b) == FERRY_EINVAL);
    /* many aggregates: the table grows and keeps every one */
    char id[32];
    int grown_ok = 1;
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "agg-%d", i);
        grown_ok &= ferry_seq_check(s, id, 1, NULL, NULL) == FERRY_SEQ_NEXT;
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "agg-%d", i);
        grown_ok &= ferry_seq_expected(s, id) == 2;
    }
    CHECK("20000_aggregates", grown_ok);

    /* envelope → message → gap check and structured JSON */
    ferry_event e = {0};
    e.type = "order.placed";
    e.source = "/orders";
    e.id = "evt-1";
    e.time_ms = 1700000000123LL;
    e.aggregate_id = "order-1";
    e.sequence = 9;
    e.schema_version = 2;
    e.correlation_id = "c-1";
    e.causation_id = "m-0";
    e.data = "{\"n\": 1}";
    ferry_message *m = NULL;
    CHECK("event_to_message", ferry_event_to_message(&e, &m) == 0);
    CHECK("message_gap_check", ferry_seq_check_message(s, m, &a, &b) == FERRY_SEQ_GAP && a == 8 && b == 8);
    int64_t v;
    CHECK("schema_version", ferry_event_schema_version(m, &v) == 0 && v == 2);
    char *json = NULL;
    CHECK("event_json", ferry_event_json(m, &json) == 0);
    const char *want = "{\"aggregateid\":\"order-1\",\"causationid\":\"m-0\",\"correlationid\":\"c-1\","
                       "\"data\":{\"n\":1},\"datacontenttype\":\"application/json\",\"id\":\"evt-1\","
                       "\"schemaversion\":2,\"sequence\":9,\"source\":\"/orders\",\"specversion\":\"1.0\","
                       "\"time\":\"2023-11-14T22:13:20.123Z\",\"type\":\"order.placed\"}";
    CHECK("event_json_exact", json && strcmp(json, want) == 0);
    if (json && strcmp(json, want) != 0)
        printf("  got  %s\n  want %s\n", json, want);
    free(json);
    CHECK("timestamp_seconds", strcmp(ferry_message_property(m, "timestamp"), "1700000000") == 0);
    ferry_message *plain = ferry_message_new();
    CHECK("no_envelope", ferry_seq_check_message(s, plain, &a, &b) == FERRY_ENOTFOUND);
    ferry_message_free(plain);
    ferry_message_free(m);

    ferry_event bad = {0};
    bad.type = "t";
    bad.source = "/s";
    bad.data = "{\"unterminated\": ";
    CHECK("bad_json_refused", ferry_event_to_message(&bad, &m) == FERRY_EJSON);
    bad.data = NULL;
    bad.source = NULL;
    CHECK("source_required", ferry_event_to_message(&bad, &m) == FERRY_EINVAL);
    bad.source = "/s";
    bad.sequence = -1;
    CHECK("negative_sequence_refused", ferry_event_to_message(&bad, &m) == FERRY_EINVAL);
    ferry_seq_free(s);
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures != 0;
}
