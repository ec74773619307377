/* map.h — a string-keyed hash map (open addressing, linear probing, a keyed hash) for names:
 * exchanges, queues, consumer tags, routing keys, message ids. Keys are copied; values are
 * borrowed pointers. */
#ifndef FERRY_MAP_H
#define FERRY_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct map_entry {
    char *key; /* NULL = empty; TOMBSTONE = deleted */
    size_t klen;
    uint64_t hash;
    void *val;
} map_entry;

typedef struct map {
    map_entry *slots;
    size_t cap; /* power of two */
    size_t count;
    size_t used; /* count + tombstones */
    uint64_t gen; /* new (process-wide unique) at map_init and at every rehash: a slot index
                   * kept across calls of map_iter is valid while gen is unchanged */
} map;

void map_init(map *m);
void map_free(map *m); /* frees keys, not values */
void *map_get(const map *m, const char *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *map_put(map *m, const char *key, size_t klen, void *val);
/* Removes; returns the removed value or NULL. */
void *map_del(map *m, const char *key, size_t klen);
/* Iteration: for (size_t i = 0; map_iter(m, &i, &e);) — safe against map_del of e. */
int map_iter(const map *m, size_t *i, map_entry **e);
/* A keyed hash of client-chosen bytes: SipHash-1-3 under a random per-process key. */
uint64_t hash_bytes(const void *p, size_t n);
/* SipHash-2-4 under an explicit key (the reference vectors check the implementation). */
uint64_t siphash24(const uint8_t key[16], const void *p, size_t n);

#endif
