/* unit.h — a minimal unit-test harness: TEST(name) functions registered in a table,
 * CHECK(cond) records a failure with file:line and carries on. */
#ifndef FERRY_UNIT_H
#define FERRY_UNIT_H

#include <stdio.h>

extern int unit_failures;
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                 \
            unit_failures++;                                                                                           \
        }                                                                                                              \
    } while (0)

typedef struct unit_test {
    const char *name;
    void (*fn)(void);
} unit_test;

#endif
