/* map.c — string-keyed open-addressing hash map (see map.h). */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static char tombstone;
#define TOMBSTONE (&tombstone)

/* FNV-1a, 64 bit: names are short, so a simple hash is fast enough. */
uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void map_init(map *m) { memset(m, 0, sizeof *m); }

void map_free(map *m) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE)
            free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static map_entry *find(const map *m, const char *key, size_t klen, uint64_t h) {
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        map_entry *e = &m->slots[i];
        if (!e->key)
            return NULL;
        if (e->key != TOMBSTONE && e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
}

void *map_get(const map *m, const char *key, size_t klen) {
    map_entry *e = find(m, key, klen, hash_bytes(key, klen));
    return e ? e->val : NULL;
}

static void grow(map *m) {
    size_t ncap = m->cap ? m->cap * 2 : 16;
    while (m->count * 2 >= ncap)
        ncap *= 2;
    map_entry *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xcalloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    m->used = m->count;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].key || old[i].key == TOMBSTONE)
            continue;
        size_t j = old[i].hash & (ncap - 1);
        while (m->slots[j].key)
            j = (j + 1) & (ncap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

void *map_put(map *m, const char *key, size_t klen, void *val) {
    uint64_t h = hash_bytes(key, klen);
    map_entry *e = find(m, key, klen, h);
    if (e) {
        void *prev = e->val;
        e->val = val;
        return prev;
    }
    if ((m->used + 1) * 4 >= m->cap * 3)
        grow(m);
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != TOMBSTONE)
        i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key)
        m->used++;
    m->slots[i] = (map_entry){xstrndup(key, klen), klen, h, val};
    m->count++;
    return NULL;
}

void *map_del(map *m, const char *key, size_t klen) {
    map_entry *e = find(m, key, klen, hash_bytes(key, klen));
    if (!e)
        return NULL;
    void *v = e->val;
    free(e->key);
    e->key = TOMBSTONE;
    e->val = NULL;
    m->count--;
    return v;
}

int map_iter(const map *m, size_t *i, map_entry **e) {
    while (*i < m->cap) {
        map_entry *s = &m->slots[(*i)++];
        if (s->key && s->key != TOMBSTONE) {
            *e = s;
            return 1;
        }
    }
    return 0;
}
