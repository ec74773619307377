/* topic.c — topic-exchange routing, as RabbitMQ matches: words split on '.', '*' is exactly
 * one word, '#' is zero or more words, and an empty routing key has no words. Exchanges route
 * through a trie of their binding keys (below), so a publish costs what its key reaches, not
 * the number of bindings. topic_match, a dynamic-programming match of one pattern (linear,
 * never exponential, for patterns such as "#.#.#"), is the reference the trie is tested
 * against. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "util.h"

#define MAX_WORDS 256

static int split_words(const char *s, size_t n, const char **w, size_t *wl) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (k == MAX_WORDS)
                return -1;
            w[k] = s + start;
            wl[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    return k;
}

int topic_match(const char *pattern, size_t plen, const char *key, size_t klen) {
    const char *pw[MAX_WORDS], *kw[MAX_WORDS];
    size_t pl[MAX_WORDS], kl[MAX_WORDS];
    int np = split_words(pattern, plen, pw, pl);
    int nk = split_words(key, klen, kw, kl);
    if (np < 0 || nk < 0)
        return 0;
    /* An empty routing key is zero words, not one empty word (RabbitMQ). */
    if (klen == 0)
        nk = 0;
    if (plen == 0)
        np = 0;
    /* m[j]: pattern words [0, i) match key words [0, j) — one row of the DP table. */
    uint8_t m[MAX_WORDS + 1], next[MAX_WORDS + 1];
    memset(m, 0, sizeof m);
    m[0] = 1;
    for (int i = 0; i < np; i++) {
        int hash = pl[i] == 1 && pw[i][0] == '#';
        int star = pl[i] == 1 && pw[i][0] == '*';
        memset(next, 0, sizeof next);
        for (int j = 0; j <= nk; j++) {
            if (hash)
                next[j] = m[j] || (j > 0 && next[j - 1]);
            else if (j > 0 && m[j - 1] && (star || (pl[i] == kl[j - 1] && memcmp(pw[i], kw[j - 1], kl[j - 1]) == 0)))
                next[j] = 1;
        }
        memcpy(m, next, sizeof m);
    }
    return m[nk];
}


/* ---- the trie of a topic exchange's bindings (RabbitMQ's rabbit_exchange_type_topic) ----
 *
 * One node per distinct binding-key prefix, an edge per word: '*' and '#' edges are fields
 * of the node, literal words live in one map per exchange keyed by (parent node, word).
 * A binding sits at the node its whole key leads to. Routing walks the routing key's words
 * position by position with the set of nodes that match so far: a literal or '*' edge takes
 * one word, a '#' edge takes none (followed at once) and its node keeps itself for each
 * further word. Each node enters the set at most once per position, so a publish costs at
 * most (nodes reached) x (words + 1) steps however the patterns look ("#.#.#" too), and
 * nothing proportional to the number of bindings. */

enum { EDGE_ROOT, EDGE_WORD, EDGE_STAR, EDGE_HASH };

typedef struct tnode tnode;
struct tnode {
    tnode *parent, *star, *hash; /* the '*' and '#' children */
    char *word;                  /* EDGE_WORD: the label of the edge from parent */
    uint8_t edge, wlen;          /* a word is at most 255 bytes (keys are short strings) */
    uint32_t nwords;             /* literal children (in the exchange's edge map) */
    binding **b;                 /* bindings whose key ends here */
    uint32_t nb, capb;
    uint64_t seen[2];            /* route marks for the current and the next position */
};

struct topic_trie {
    tnode root;
    map edges; /* (parent pointer bytes, word) -> child */
    size_t nnodes;
    uint64_t epoch;
    tnode **cur, **next; /* scratch: the nodes matching at this position and the next */
    size_t ncur, nnext, cap;
};

static size_t edge_key(char *k, const tnode *parent, const char *w, size_t wn) {
    memcpy(k, &parent, sizeof parent);
    memcpy(k + sizeof parent, w, wn);
    return sizeof parent + wn;
}

static int is_word(const char *w, size_t n, char c) { return n == 1 && w[0] == c; }

/* The child of n along word w; created if create, else NULL when absent. */
static tnode *child(struct topic_trie *t, tnode *n, const char *w, size_t wn, int create) {
    tnode **slot = is_word(w, wn, '*') ? &n->star : is_word(w, wn, '#') ? &n->hash : NULL;
    char k[sizeof(tnode *) + 256];
    size_t kn = 0;
    tnode *c;
    if (slot) {
        c = *slot;
    } else {
        kn = edge_key(k, n, w, wn);
        c = map_get(&t->edges, k, kn);
    }
    if (c || !create)
        return c;
    c = xcalloc(1, sizeof *c);
    c->parent = n;
    t->nnodes++;
    if (slot) {
        c->edge = slot == &n->star ? EDGE_STAR : EDGE_HASH;
        *slot = c;
    } else {
        c->edge = EDGE_WORD;
        c->word = xstrndup(w, wn);
        c->wlen = (uint8_t)wn;
        map_put(&t->edges, k, kn, c);
        n->nwords++;
    }
    return c;
}

/* The node a binding key leads to (created along the way if create). An empty key has no
 * words: the root. */
static tnode *walk(struct topic_trie *t, const char *key, size_t n, int create) {
    tnode *node = &t->root;
    if (n == 0)
        return node;
    size_t start = 0;
    for (size_t i = 0; i <= n && node; i++) {
        if (i == n || key[i] == '.') {
            assert(i - start <= 255);
            node = child(t, node, key + start, i - start, create);
            start = i + 1;
        }
    }
    return node;
}

void topic_add(exchange *x, binding *bd) {
    if (!x->trie) {
        x->trie = xcalloc(1, sizeof *x->trie);
        map_init(&x->trie->edges);
    }
    tnode *n = walk(x->trie, bd->key, bd->key_len, 1);
    if (n->nb == n->capb) {
        n->capb = n->capb ? n->capb * 2 : 2;
        n->b = xrealloc(n->b, n->capb * sizeof *n->b);
    }
    n->b[n->nb++] = bd;
}

/* Frees n, which has no binding and no child, and unlinks it from its parent. */
static void prune_one(struct topic_trie *t, tnode *n) {
    assert(n->nb == 0 && n->nwords == 0 && !n->star && !n->hash && n->edge != EDGE_ROOT);
    tnode *p = n->parent;
    if (n->edge == EDGE_STAR) {
        p->star = NULL;
    } else if (n->edge == EDGE_HASH) {
        p->hash = NULL;
    } else {
        char k[sizeof(tnode *) + 256];
        tnode *was = map_del(&t->edges, k, edge_key(k, p, n->word, n->wlen));
        assert(was == n);
        (void)was;
        p->nwords--;
    }
    free(n->word);
    free(n->b);
    free(n);
    t->nnodes--;
}

void topic_remove(exchange *x, binding *bd) {
    struct topic_trie *t = x->trie;
    assert(t);
    tnode *n = walk(t, bd->key, bd->key_len, 0);
    assert(n); /* every binding of a topic exchange is in its trie */
    uint32_t i = 0;
    while (i < n->nb && n->b[i] != bd)
        i++;
    assert(i < n->nb);
    memmove(&n->b[i], &n->b[i + 1], (n->nb - i - 1) * sizeof *n->b);
    n->nb--;
    /* Unbind removes the nodes no binding needs any more, up to the first one still used. */
    while (n->edge != EDGE_ROOT && n->nb == 0 && n->nwords == 0 && !n->star && !n->hash) {
        tnode *p = n->parent;
        prune_one(t, n);
        n = p;
    }
}

static void free_subtree(tnode *n) {
    if (n->star)
        free_subtree(n->star);
    if (n->hash)
        free_subtree(n->hash);
    free(n->word);
    free(n->b);
    if (n->edge != EDGE_ROOT)
        free(n);
}

void topic_free(exchange *x) {
    struct topic_trie *t = x->trie;
    if (!t)
        return;
    /* Every literal-edge node is in the edge map; '*' and '#' nodes hang off their parent
     * (chains of them are at most 128 deep: a key has at most 128 such words). First the
     * '*'/'#' subtrees of map nodes, then the map nodes, then the root's subtrees. */
    size_t i = 0;
    map_entry *e;
    while (map_iter(&t->edges, &i, &e)) {
        tnode *c = e->val;
        if (c->star)
            free_subtree(c->star);
        if (c->hash)
            free_subtree(c->hash);
        c->star = c->hash = NULL;
    }
    i = 0;
    while (map_iter(&t->edges, &i, &e)) {
        tnode *c = e->val;
        free(c->word);
        free(c->b);
        free(c);
    }
    map_free(&t->edges);
    free_subtree(&t->root);
    free(t->cur);
    free(t->next);
    free(t);
    x->trie = NULL;
}

/* Adds n to the nodes matching at position pos (cur if pos == at, else next), once. */
static void activate(struct topic_trie *t, tnode *n, uint64_t base, size_t pos, size_t at) {
    uint64_t mark = base + pos + 1;
    if (n->seen[pos & 1] == mark)
        return;
    n->seen[pos & 1] = mark;
    if (t->ncur == t->cap || t->nnext == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cur = xrealloc(t->cur, t->cap * sizeof *t->cur);
        t->next = xrealloc(t->next, t->cap * sizeof *t->next);
    }
    if (pos == at)
        t->cur[t->ncur++] = n;
    else
        t->next[t->nnext++] = n;
}

size_t topic_route(exchange *x, const char *key, size_t klen, void (*fn)(binding *)) {
    struct topic_trie *t = x->trie;
    if (!t)
        return 0;
    const char *w[MAX_WORDS];
    size_t wl[MAX_WORDS];
    int nk = klen ? split_words(key, klen, w, wl) : 0;
    assert(nk >= 0); /* a routing key is a short string: at most 256 words */
    uint64_t base = t->epoch;
    t->epoch += (uint64_t)nk + 2;
    t->ncur = t->nnext = 0;
    activate(t, &t->root, base, 0, 0);
    size_t matched = 0;
    for (size_t i = 0;; i++) {
        /* cur grows while it is walked: a '#' child matches at this same position */
        for (size_t j = 0; j < t->ncur; j++) {
            tnode *n = t->cur[j];
            if (n->hash)
                activate(t, n->hash, base, i, i);
            if (i == (size_t)nk)
                continue;
            if (n->edge == EDGE_HASH)
                activate(t, n, base, i + 1, i); /* '#' takes word i too */
            if (n->star)
                activate(t, n->star, base, i + 1, i);
            if (n->nwords) {
                char k[sizeof(tnode *) + 256];
                tnode *c = map_get(&t->edges, k, edge_key(k, n, w[i], wl[i]));
                if (c)
                    activate(t, c, base, i + 1, i);
            }
        }
        if (i == (size_t)nk)
            break;
        tnode **tmp = t->cur;
        t->cur = t->next;
        t->next = tmp;
        t->ncur = t->nnext;
        t->nnext = 0;
    }
    for (size_t j = 0; j < t->ncur; j++) {
        tnode *n = t->cur[j];
        for (uint32_t k = 0; k < n->nb; k++, matched++)
            fn(n->b[k]);
    }
    return matched;
}
