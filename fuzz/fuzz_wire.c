/* fuzz_wire.c — libFuzzer target for everything ferryd decodes from the network before any
 * state changes: frame splitting, field tables (nested, arrays) and basic properties.
 * Run with `make fuzz` (FUZZ_SECONDS=N); a short smoke run is part of `make test`. */
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

static void walk(slice t, int is_array, int depth) {
    if (depth > 40)
        return;
    rd r = rd_make(t.p, t.n);
    slice k;
    fval v;
    char text[64];
    while ((is_array ? array_next(&r, &v) : table_next(&r, &k, &v)) == 1) {
        fval_format(&v, text, sizeof text);
        fval_equal(&v, &v);
        if (v.type == 'F' || v.type == 'A')
            walk(v.s, v.type == 'A', depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p = data;
    size_t n = size;
    /* Split into frames as the connection does; decode each payload every way we can. */
    for (int i = 0; i < 64; i++) {
        frame f;
        const char *why;
        long used = wire_parse_frame(p, n, 131072, &f, &why);
        if (used <= 0)
            break;
        slice payload = {f.payload, f.size};
        if (table_validate(payload) == 0) {
            walk(payload, 0, 0);
            fval v;
            table_get(payload, "x-match", &v);
        }
        if (f.size > 12) {
            props_view pv;
            props_parse((slice){f.payload + 12, f.size - 12}, &pv);
        }
        p += used;
        n -= (size_t)used;
    }
    /* The raw input as a table and as properties too. */
    slice all = {data, size};
    if (table_validate(all) == 0)
        walk(all, 0, 0);
    props_view pv;
    props_parse(all, &pv);
    return 0;
}
