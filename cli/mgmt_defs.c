/* mgmt_defs.c — `ferry definitions export|import`: the broker's users, vhosts, permissions,
 * queues, exchanges, bindings and policies as one JSON document (RabbitMQ's definitions
 * format, so a file exported from RabbitMQ imports into ferryd and the other way round).
 *
 * The file is checked locally before it is sent: a file that is not JSON fails with its line
 * and column instead of the broker's 400. */
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

static const char defs_usage[] =
    "usage: ferry definitions export [FILE] [--vhost V] [--url URL]\n"
    "       ferry definitions import FILE [--vhost V] [--url URL]\n"
    "\n"
    "export writes the broker's definitions (users, vhosts, permissions, queues, exchanges,\n"
    "bindings, policies) as JSON to FILE, or to stdout without FILE or with '-'.\n"
    "import reads such a file ('-' for stdin) and applies it: what it names is created or\n"
    "updated, nothing else is removed.\n"
    "\n"
    "  --vhost V        only this vhost's queues, exchanges, bindings and policies\n"
    "  --json           (export always writes JSON; import prints a JSON summary)\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused, or FILE cannot be read or written or is not JSON,\n"
    "2 bad usage, 3 the broker cannot be reached.\n";

/* "3 queues, 2 exchanges, 1 binding" for what a definitions document holds. */
static void summary(const json_t *d, char *out, size_t n) {
    static const char *const keys[] = {"users", "vhosts", "permissions", "queues", "exchanges", "bindings",
                                       "policies", NULL};
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; keys[i]; i++) {
        const json_t *v = json_object_get(d, keys[i]);
        if (!json_is_array(v))
            continue;
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%zu %s", len ? ", " : "",
                                json_array_size(v), keys[i]);
        if (len >= n)
            break;
    }
}

int mgmt_definitions_main(int argc, char **argv) {
    mgmt m = {.cmd = "definitions", .usage = defs_usage};
    const char *pos[2];
    int npos, rc = mgmt_init(&m, argc, argv, NULL, pos, 1, 2, &npos);
    if (rc >= 0)
        return rc;
    int export = strcmp(pos[0], "export") == 0, import = strcmp(pos[0], "import") == 0;
    if (!export && !import) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "unknown subcommand '%s' (export or import)", pos[0]);
    }
    if (import && npos < 2) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "import needs a FILE ('-' for stdin)");
    }
    const char *file = npos > 1 && strcmp(pos[1], "-") != 0 ? pos[1] : NULL;
    char path[1024], ev[768], sum[256];
    if (m.vhost)
        snprintf(path, sizeof path, "/api/definitions/%s", mgmt_esc(m.vhost, ev, sizeof ev));
    else
        snprintf(path, sizeof path, "/api/definitions");
    m.timeout_ms = 120000; /* large brokers have large definitions */

    if (export) {
        json_t *d = NULL;
        rc = mgmt_call(&m, "GET", path, NULL, &d, NULL);
        if (rc == MG_OK && !json_is_object(d))
            rc = mgmt_fail(&m, MG_FAILED, "GET %s: the reply is not a JSON object", path);
        if (rc == MG_OK) {
            int flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER;
            if (file ? json_dump_file(d, file, flags) != 0 : json_dumpf(d, stdout, flags) != 0)
                rc = mgmt_fail(&m, MG_FAILED, "cannot write %s", file ? file : "stdout");
            else if (!file)
                fputc('\n', stdout);
            summary(d, sum, sizeof sum);
            if (rc == MG_OK && file)
                fprintf(stderr, "exported %s to %s\n", sum, file);
        }
        json_decref(d);
        mgmt_free(&m);
        return rc;
    }

    json_error_t je;
    json_t *d = file ? json_load_file(file, 0, &je) : json_loadf(stdin, 0, &je);
    if (!d) {
        mgmt_free(&m);
        return mgmt_fail(&m, MG_FAILED, "%s: not a JSON definitions file: %s (line %d, column %d)",
                         file ? file : "stdin", je.text, je.line, je.column);
    }
    if (!json_is_object(d)) {
        const char *what = json_is_array(d) ? "list" : "value";
        json_decref(d);
        mgmt_free(&m);
        return mgmt_fail(&m, MG_FAILED, "%s: definitions are a JSON object, not a %s", file ? file : "stdin", what);
    }
    rc = mgmt_call(&m, "POST", path, d, NULL, NULL);
    summary(d, sum, sizeof sum);
    if (rc == MG_OK && m.json) {
        json_t *o = json_pack("{s:b, s:s}", "imported", 1, "definitions", sum);
        mgmt_print_json(o);
        json_decref(o);
    } else if (rc == MG_OK) {
        printf("imported %s\n", sum[0] ? sum : "nothing");
    }
    json_decref(d);
    mgmt_free(&m);
    return rc;
}
