/* config.h — ferryd's settings: command-line flags and the --config file (key = value). */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdint.h>

typedef struct config {
    int port;
    int http_port;
    int prometheus_port; /* /metrics on its own port too (rabbitmq_prometheus's 15692); 0 = off */
    int log_json;        /* --log-format json: one JSON object per log line */
    char data_dir[512];
    char bind[4][64]; /* listen addresses; default 127.0.0.1 and ::1 */
    int nbind;
    int heartbeat;           /* seconds proposed in connection.tune */
    uint32_t frame_max;      /* proposed in connection.tune */
    uint16_t channel_max;    /* proposed in connection.tune */
    int handshake_timeout_ms;
    uint64_t max_message_size;
    uint32_t max_connections; /* open AMQP connections at once; 0 = no limit (RabbitMQ's default) */
    int log_level;
    char default_user[64];
    char default_pass[64];
    int loopback_users_only; /* (unused: see loopback_users) */
    char loopback_users[512]; /* users that may connect only from loopback, comma-separated
                               * (RabbitMQ's loopback_users; default "guest"; "" = none) */
    char definitions[512];    /* a RabbitMQ definitions file loaded at start ("" = none) */
    int rabbit_password_hashes; /* new password hashes RabbitMQ-style (sha256), not PBKDF2 */
    uint64_t segment_size;          /* message log segments roll over at about this size */
    uint64_t disk_free_limit;       /* below this much free disk, publishers are blocked */
    uint64_t memory_high_watermark; /* above this much message memory, publishers are blocked */
    uint64_t memory_budget;         /* above this much message memory, deep queues page bodies out */
    /* TLS (amqps): on when tls_cert is set; tls_port -1 = unset (5671 with a certificate) */
    int tls_port;
    char tls_cert[512], tls_key[512], tls_ca[512];
    int tls_verify;          /* enum tls_verify (tls.h): none, peer, require */
    int cert_login_from_cn;  /* EXTERNAL: the user is the certificate's CN, not its whole DN */
} config;

void config_defaults(config *c);
/* Parses argv into c; on a bad flag or value writes a message to err and returns -1.
 * Returns 1 if --help/--version was handled (exit 0). */
int config_parse_args(config *c, int argc, char **argv, char *err, int errlen);
int config_load_file(config *c, const char *path, char *err, int errlen);

#endif
