/* unit.h — a minimal unit-test harness: TEST(name) functions registered in a table,
 * CHECK(cond) records a failure with file:line and carries on. */
#ifndef FERRY_UNIT_H
#define FERRY_UNIT_H

#include <stdio.h>

static int unit_failures; /* one test program per translation unit */
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

/* Runs every test, one PASS/FAIL line each, then "unit: N passed, N failed" (read by
 * tests/run.sh). Returns the exit status. */
static inline int unit_run(const unit_test *tests, size_t n) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        int before = unit_failures;
        tests[i].fn();
        if (unit_failures == before) {
            passed++;
            printf("PASS %s\n", tests[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        }
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
