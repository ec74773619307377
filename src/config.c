/* config.c — flags and the config file. Both use the same names: `--port 5673` on the
 * command line is `port = 5673` in the file. A bad name or value is an error that names it. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    c->port = 5672;
    c->http_port = 15672;
    snprintf(c->data_dir, sizeof c->data_dir, "./data");
    c->heartbeat = 60;
    c->frame_max = 131072;
    c->channel_max = 2047;
    c->handshake_timeout_ms = 10000;
    c->max_message_size = 128u << 20; /* RabbitMQ's default max_message_size */
    c->log_level = LOG_INFO;
    snprintf(c->default_user, sizeof c->default_user, "guest");
    snprintf(c->default_pass, sizeof c->default_pass, "guest");
    c->loopback_users_only = 1;
    snprintf(c->loopback_users, sizeof c->loopback_users, "guest");
    c->segment_size = 64u << 20;
    c->disk_free_limit = 50u * 1000 * 1000; /* RabbitMQ's default disk_free_limit */
    /* RabbitMQ's default vm_memory_high_watermark: 40% of the machine's memory */
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    c->memory_high_watermark = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 10 * 4 : 1ULL << 30;
    /* Paging starts well below the watermark, so a deep queue never blocks publishers: at a
     * tenth of RAM, at most 128 MiB (the index of a deep queue, 32 bytes a message, stays in
     * memory besides). */
    uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 1ULL << 30;
    c->memory_budget = MIN(ram / 10, 128ULL << 20);
    c->tls_port = -1;
}

static int parse_int(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

/* Applies one setting. Returns 0, or -1 with a message in err. */
static int set(config *c, const char *name, const char *val, char *err, int errlen) {
    long long n;
#define INT_OPT(key, field, lo, hi)                                                                                   \
    if (strcmp(name, key) == 0) {                                                                                      \
        if (parse_int(val, lo, hi, &n) < 0) {                                                                          \
            snprintf(err, (size_t)errlen, "invalid value '%s' for %s (expected an integer from %lld to %lld)", val,     \
                     key, (long long)(lo), (long long)(hi));                                                           \
            return -1;                                                                                                 \
        }                                                                                                              \
        c->field = n;                                                                                                  \
        return 0;                                                                                                      \
    }
    INT_OPT("port", port, 0, 65535)
    INT_OPT("http-port", http_port, 0, 65535)
    INT_OPT("prometheus-port", prometheus_port, 0, 65535)
    INT_OPT("heartbeat", heartbeat, 0, 65535)
    INT_OPT("frame-max", frame_max, 4096, 1 << 24)
    INT_OPT("channel-max", channel_max, 1, 65535)
    INT_OPT("handshake-timeout", handshake_timeout_ms, 100, 3600000)
    INT_OPT("max-message-size", max_message_size, 0, 512LL << 20)
    INT_OPT("max-connections", max_connections, 0, 1 << 24)
    INT_OPT("segment-size", segment_size, 4096, 1LL << 32)
    INT_OPT("disk-free-limit", disk_free_limit, 0, 1LL << 50)
    INT_OPT("memory-high-watermark", memory_high_watermark, 1 << 20, 1LL << 50)
    INT_OPT("memory-budget", memory_budget, 1 << 16, 1LL << 50)
    INT_OPT("tls-port", tls_port, 0, 65535)
#undef INT_OPT
#define PATH_OPT(key, field)                                                                                          \
    if (strcmp(name, key) == 0) {                                                                                      \
        if (!*val || strlen(val) >= sizeof c->field) {                                                                 \
            snprintf(err, (size_t)errlen, "invalid value for %s (expected a file name)", key);                         \
            return -1;                                                                                                 \
        }                                                                                                              \
        snprintf(c->field, sizeof c->field, "%s", val);                                                                \
        return 0;                                                                                                      \
    }
    PATH_OPT("tls-cert", tls_cert)
    PATH_OPT("tls-key", tls_key)
    PATH_OPT("tls-ca", tls_ca)
#undef PATH_OPT
    if (strcmp(name, "tls-verify") == 0) {
        static const char *modes[] = {"none", "peer", "require"}; /* enum tls_verify's order */
        for (int i = 0; i < 3; i++) {
            if (strcmp(val, modes[i]) == 0) {
                c->tls_verify = i;
                return 0;
            }
        }
        snprintf(err, (size_t)errlen, "invalid value '%s' for tls-verify (none, peer or require)", val);
        return -1;
    }
    if (strcmp(name, "ssl-cert-login-from") == 0) { /* RabbitMQ's name and values */
        if (strcmp(val, "distinguished_name") == 0 || strcmp(val, "common_name") == 0) {
            c->cert_login_from_cn = val[0] == 'c';
            return 0;
        }
        snprintf(err, (size_t)errlen,
                 "invalid value '%s' for ssl-cert-login-from (distinguished_name or common_name)", val);
        return -1;
    }
    if (strcmp(name, "data-dir") == 0) {
        if (!*val || strlen(val) >= sizeof c->data_dir) {
            snprintf(err, (size_t)errlen, "invalid value for data-dir");
            return -1;
        }
        snprintf(c->data_dir, sizeof c->data_dir, "%s", val);
        return 0;
    }
    if (strcmp(name, "bind") == 0) {
        if (c->nbind >= 4 || strlen(val) >= sizeof c->bind[0]) {
            snprintf(err, (size_t)errlen, "too many or too long bind addresses ('%s')", val);
            return -1;
        }
        snprintf(c->bind[c->nbind++], sizeof c->bind[0], "%s", val);
        return 0;
    }
    if (strcmp(name, "definitions") == 0) {
        if (!*val || strlen(val) >= sizeof c->definitions) {
            snprintf(err, (size_t)errlen, "invalid value for definitions (a file name)");
            return -1;
        }
        snprintf(c->definitions, sizeof c->definitions, "%s", val);
        return 0;
    }
    if (strcmp(name, "loopback-users") == 0) {
        if (strlen(val) >= sizeof c->loopback_users) {
            snprintf(err, (size_t)errlen, "invalid value for loopback-users (too long)");
            return -1;
        }
        snprintf(c->loopback_users, sizeof c->loopback_users, "%s", strcmp(val, "none") == 0 ? "" : val);
        return 0;
    }
    if (strcmp(name, "password-hashing") == 0) {
        if (strcmp(val, "pbkdf2") == 0 || strcmp(val, "ferry_password_hashing_pbkdf2_sha256") == 0) {
            c->rabbit_password_hashes = 0;
            return 0;
        }
        if (strcmp(val, "rabbit_password_hashing_sha256") == 0 || strcmp(val, "sha256") == 0) {
            c->rabbit_password_hashes = 1;
            return 0;
        }
        snprintf(err, (size_t)errlen,
                 "invalid value '%s' for password-hashing (pbkdf2 or rabbit_password_hashing_sha256)", val);
        return -1;
    }
    if (strcmp(name, "log-format") == 0) {
        if (strcmp(val, "text") == 0 || strcmp(val, "json") == 0) {
            c->log_json = val[0] == 'j';
            return 0;
        }
        snprintf(err, (size_t)errlen, "invalid value '%s' for log-format (text or json)", val);
        return -1;
    }
    if (strcmp(name, "log-level") == 0) {
        static const char *levels[] = {"debug", "info", "warning", "error"};
        for (int i = 0; i < 4; i++) {
            if (strcmp(val, levels[i]) == 0) {
                c->log_level = i;
                return 0;
            }
        }
        snprintf(err, (size_t)errlen, "invalid value '%s' for log-level (debug, info, warning or error)", val);
        return -1;
    }
    snprintf(err, (size_t)errlen, "unknown option '%s'", name);
    return -1;
}

int config_load_file(config *c, const char *path, char *err, int errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, (size_t)errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        char *end = p + strlen(p);
        while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        if (!*p || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            snprintf(err, (size_t)errlen, "%s:%d: expected 'name = value'", path, lineno);
            fclose(f);
            return -1;
        }
        char *name_end = eq;
        while (name_end > p && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        *name_end = 0;
        char *val = eq + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        for (char *k = p; *k; k++) /* handshake_timeout and handshake-timeout are one name */
            if (*k == '_')
                *k = '-';
        char msg[256];
        if (set(c, p, val, msg, sizeof msg) < 0) {
            snprintf(err, (size_t)errlen, "%s:%d: %s", path, lineno, msg);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

static const char usage[] =
    "usage: ferryd [options]\n"
    "  --port N               AMQP port (default 5672)\n"
    "  --bind ADDR            listen address, repeatable (default 127.0.0.1 and ::1)\n"
    "  --data-dir DIR         data directory (default ./data)\n"
    "  --http-port N          management HTTP port (default 15672; 0 = off)\n"
    "  --prometheus-port N    Prometheus /metrics on this port too (default 0: only on the HTTP port)\n"
    "  --config FILE          settings file: one 'name = value' per line, same names as the flags\n"
    "  --heartbeat S          heartbeat interval proposed to clients (default 60; 0 = off)\n"
    "  --frame-max N          largest frame in bytes (default 131072)\n"
    "  --channel-max N        most channels per connection (default 2047)\n"
    "  --handshake-timeout MS time allowed for the AMQP handshake (default 10000)\n"
    "  --max-message-size N   largest message body in bytes (default 134217728)\n"
    "  --max-connections N    most open AMQP connections; more are refused at connection.open\n"
    "                         (default 0: no limit but the file descriptor limit)\n"
    "  --log-level L          debug, info, warning or error (default info)\n"
    "  --log-format F         text (default) or json: one JSON object per log line\n"
    "  --segment-size N       message log segment size in bytes (default 67108864)\n"
    "  --disk-free-limit N    block publishers below this many free bytes (default 50000000)\n"
    "  --memory-high-watermark N  block publishers above this many bytes of messages (default 40% of RAM)\n"
    "  --memory-budget N      above this many bytes of messages, bodies of deep queues live only on\n"
    "                         disk (read back ahead of consumers; default 10% of RAM, at most 128 MiB)\n"
    "  --definitions FILE     load users, vhosts, permissions and topology from a RabbitMQ definitions file\n"
    "  --loopback-users LIST  users that may connect only from loopback, comma-separated (default guest; none)\n"
    "  --password-hashing H   new password hashes: pbkdf2 (default) or rabbit_password_hashing_sha256\n"
    "  --tls-port N           AMQP over TLS (amqps) port (default 5671 when --tls-cert is given)\n"
    "  --tls-cert FILE        server certificate (PEM, may hold the chain); turns TLS on\n"
    "  --tls-key FILE         its private key (PEM)\n"
    "  --tls-ca FILE          CA certificates (PEM) that client certificates are verified against\n"
    "  --tls-verify V         client certificates: none, peer (verified if sent) or require\n"
    "                         (default none)\n"
    "  --ssl-cert-login-from W  EXTERNAL login name: distinguished_name (default) or common_name\n"
    "                         (SIGHUP reloads the certificate and key for new connections)\n"
    "  --help, --version\n";

int config_parse_args(config *c, int argc, char **argv, char *err, int errlen) {
    int nbind_flags = 0;
    /* --config first, so that flags override the file wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, (size_t)errlen, "option --config needs a value");
                return -1;
            }
            if (config_load_file(c, argv[i + 1], err, errlen) < 0)
                return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            puts("ferryd " "0.1.0");
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, (size_t)errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2;
        const char *val = NULL;
        char namebuf[64];
        const char *eq = strchr(name, '=');
        if (eq) {
            snprintf(namebuf, sizeof namebuf, "%.*s", (int)(eq - name), name);
            name = namebuf;
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, (size_t)errlen, "option --%s needs a value", name);
                return -1;
            }
            val = argv[++i];
        }
        if (strcmp(name, "config") == 0)
            continue;
        if (strcmp(name, "bind") == 0 && nbind_flags++ == 0)
            c->nbind = 0; /* flags replace the file's (or default) addresses */
        char msg[256];
        if (set(c, name, val, msg, sizeof msg) < 0) {
            if (strncmp(msg, "unknown option", 14) == 0)
                snprintf(err, (size_t)errlen, "unknown option '--%s' (see --help)", name);
            else
                snprintf(err, (size_t)errlen, "%s", msg);
            return -1;
        }
    }
    /* TLS settings that only make sense together. */
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, (size_t)errlen, "%s is set but %s is not (TLS needs both)", c->tls_cert[0] ? "tls-cert" : "tls-key",
                 c->tls_cert[0] ? "tls-key" : "tls-cert");
        return -1;
    }
    if (!c->tls_cert[0] && (c->tls_port >= 0 || c->tls_ca[0] || c->tls_verify)) {
        snprintf(err, (size_t)errlen, "%s is set but tls-cert and tls-key are not",
                 c->tls_port >= 0 ? "tls-port" : c->tls_ca[0] ? "tls-ca" : "tls-verify");
        return -1;
    }
    if (c->tls_verify && !c->tls_ca[0]) {
        snprintf(err, (size_t)errlen, "tls-verify %s needs tls-ca (the CA client certificates are verified against)",
                 c->tls_verify == 1 ? "peer" : "require");
        return -1;
    }
    if (c->tls_cert[0] && c->tls_port < 0)
        c->tls_port = 5671;
    if (c->tls_cert[0] && c->tls_port == c->port && c->port != 0) {
        snprintf(err, (size_t)errlen, "tls-port %d is the same as port", c->tls_port);
        return -1;
    }
    if (c->nbind == 0) {
        snprintf(c->bind[0], sizeof c->bind[0], "127.0.0.1");
        snprintf(c->bind[1], sizeof c->bind[1], "::1");
        c->nbind = 2;
    }
    return 0;
}
