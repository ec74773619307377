/* seq.c — per-aggregate sequence tracking (seq.h): a hash table (FNV-1a, chained, doubled
 * when it is as full as it is long) from aggregate id to the next expected sequence. */
#include <stdlib.h>
#include <string.h>

#include "ferry/envelope.h"
#include "ferry/seq.h"
#include "internal.h"

typedef struct entry {
    struct entry *next;
    int64_t expected;
    char id[];
} entry;

struct ferry_seq {
    entry **b;
    size_t nb, n;
};

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

ferry_seq *ferry_seq_new(void) {
    ferry_seq *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->nb = 64;
    s->b = calloc(s->nb, sizeof *s->b);
    if (!s->b) {
        free(s);
        return NULL;
    }
    return s;
}

void ferry_seq_free(ferry_seq *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->nb; i++)
        while (s->b[i]) {
            entry *n = s->b[i]->next;
            free(s->b[i]);
            s->b[i] = n;
        }
    free(s->b);
    free(s);
}

static entry *find(const ferry_seq *s, const char *id) {
    for (entry *e = s->b[fnv(id) % s->nb]; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static entry *add(ferry_seq *s, const char *id) {
    if (s->n >= s->nb) {
        size_t nb = s->nb * 2;
        entry **b = calloc(nb, sizeof *b);
        if (!b)
            return NULL;
        for (size_t i = 0; i < s->nb; i++)
            while (s->b[i]) {
                entry *e = s->b[i];
                s->b[i] = e->next;
                e->next = b[fnv(e->id) % nb];
                b[fnv(e->id) % nb] = e;
            }
        free(s->b);
        s->b = b;
        s->nb = nb;
    }
    size_t l = strlen(id);
    entry *e = malloc(sizeof *e + l + 1);
    if (!e)
        return NULL;
    memcpy(e->id, id, l + 1);
    e->expected = 1;
    size_t k = fnv(id) % s->nb;
    e->next = s->b[k];
    s->b[k] = e;
    s->n++;
    return e;
}

int ferry_seq_check(ferry_seq *s, const char *aggregate, int64_t seq, int64_t *missing_from, int64_t *missing_to) {
    if (!s || !aggregate || seq < 1 || seq == INT64_MAX)
        return FERRY_EINVAL;
    entry *e = find(s, aggregate);
    if (!e && !(e = add(s, aggregate)))
        return FERRY_ENOMEM;
    if (seq < e->expected)
        return FERRY_SEQ_DUPLICATE;
    if (seq == e->expected) {
        e->expected++;
        return FERRY_SEQ_NEXT;
    }
    if (missing_from)
        *missing_from = e->expected;
    if (missing_to)
        *missing_to = seq - 1;
    e->expected = seq + 1;
    return FERRY_SEQ_GAP;
}

int ferry_seq_check_message(ferry_seq *s, const ferry_message *m, int64_t *missing_from, int64_t *missing_to) {
    char *agg = NULL;
    int64_t seq;
    int rc = ferry_message_header_str(m, FERRY_H_AGGREGATE_ID, &agg);
    if (rc < 0)
        return rc;
    rc = ferry_message_header_int(m, FERRY_H_SEQUENCE, &seq);
    if (rc == 0)
        rc = ferry_seq_check(s, agg, seq, missing_from, missing_to);
    free(agg);
    return rc;
}

int64_t ferry_seq_expected(const ferry_seq *s, const char *aggregate) {
    const entry *e = s && aggregate ? find(s, aggregate) : NULL;
    return e ? e->expected : 1;
}

int ferry_seq_set(ferry_seq *s, const char *aggregate, int64_t next_expected) {
    if (!s || !aggregate || next_expected < 1)
        return FERRY_EINVAL;
    entry *e = find(s, aggregate);
    if (!e && !(e = add(s, aggregate)))
        return FERRY_ENOMEM;
    e->expected = next_expected;
    return 0;
}
