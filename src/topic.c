/* topic.c — topic-exchange pattern matching, as RabbitMQ matches: words split on '.', '*'
 * is exactly one word, '#' is zero or more words, and an empty routing key has no words.
 * A dynamic-programming match keeps patterns such as "#.#.#" linear, never exponential. */
#include <stdint.h>
#include <string.h>

#include "broker.h"

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

