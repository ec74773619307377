/* mgmt_consume.c — `ferry consume QUEUE`: a real AMQP consumer (rabbitmq-c) that prints each
 * message and acknowledges it after printing.
 *
 * Why AMQP and not the HTTP get endpoint in a loop: a consumer is pushed messages as they
 * arrive (no polling interval, no HTTP request per message), counts as a consumer on the
 * queue (so `ferry queues` and alerts on `consumers` see it), and is at-least-once: a
 * message is acked only once it has been written out, so a consume that dies (or is
 * stopped with Ctrl-C) leaves the rest in the queue, redelivered to the next consumer. Each
 * message is printed in the same shape as `ferry get` (readable, or one JSON object per
 * line with --json). The broker address follows the AMQP convention: --uri, else an
 * amqp(s):// FERRY_URL, else the host and user of --url / FERRY_URL on port 5672. */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "mgmt.h"
#include "../lib/internal.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void set_bytes(json_t *o, const char *key, amqp_bytes_t b) {
    json_object_set_new(o, key, json_stringn_nocheck(b.bytes, b.len));
}

/* An envelope in the shape of the management API's get reply. */
static json_t *envelope_to_json(const amqp_envelope_t *env) {
    const amqp_basic_properties_t *p = &env->message.properties;
    json_t *props = json_object();
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        set_bytes(props, "content_type", p->content_type);
    if (p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG)
        set_bytes(props, "content_encoding", p->content_encoding);
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
        json_object_set_new(props, "headers", fm_table_json(&p->headers));
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        json_object_set_new(props, "delivery_mode", json_integer(p->delivery_mode));
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        json_object_set_new(props, "priority", json_integer(p->priority));
    if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        set_bytes(props, "correlation_id", p->correlation_id);
    if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)
        set_bytes(props, "reply_to", p->reply_to);
    if (p->_flags & AMQP_BASIC_EXPIRATION_FLAG)
        set_bytes(props, "expiration", p->expiration);
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        set_bytes(props, "message_id", p->message_id);
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        json_object_set_new(props, "timestamp", json_integer((json_int_t)p->timestamp));
    if (p->_flags & AMQP_BASIC_TYPE_FLAG)
        set_bytes(props, "type", p->type);
    if (p->_flags & AMQP_BASIC_USER_ID_FLAG)
        set_bytes(props, "user_id", p->user_id);
    if (p->_flags & AMQP_BASIC_APP_ID_FLAG)
        set_bytes(props, "app_id", p->app_id);
    json_t *m = json_object();
    json_object_set_new(m, "payload_bytes", json_integer((json_int_t)env->message.body.len));
    json_object_set_new(m, "redelivered", json_boolean(env->redelivered));
    set_bytes(m, "exchange", env->exchange);
    set_bytes(m, "routing_key", env->routing_key);
    json_object_set_new(m, "properties", props);
    /* Text when it is UTF-8 (jansson checks), else base64: the management API's "auto". */
    json_t *text = json_stringn(env->message.body.bytes, env->message.body.len);
    if (text) {
        json_object_set_new(m, "payload", text);
        json_object_set_new(m, "payload_encoding", json_string("string"));
    } else {
        size_t len = env->message.body.len;
        unsigned char *b64 = malloc(4 * ((len + 2) / 3) + 1);
        if (b64) {
            EVP_EncodeBlock(b64, env->message.body.bytes, (int)len);
            json_object_set_new(m, "payload", json_string((char *)b64));
            free(b64);
        }
        json_object_set_new(m, "payload_encoding", json_string("base64"));
    }
    return m;
}

/* Why an AMQP call failed, for the user: the broker's close reason or the library's error.
 * Returns the exit code: 3 when the broker could not be reached, else 1. */
static int amqp_failure(mgmt *m, const char *what, amqp_rpc_reply_t r) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_connection_close_t *c = r.reply.decoded; /* same layout as channel.close */
            return mgmt_fail(m, MG_FAILED, "%s: the broker closed the %s: %u %.*s", what,
                             r.reply.id == AMQP_CONNECTION_CLOSE_METHOD ? "connection" : "channel", c->reply_code,
                             (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        }
        return mgmt_fail(m, MG_FAILED, "%s: unexpected method 0x%08x from the broker", what, r.reply.id);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return mgmt_fail(m, MG_FAILED, "%s: %s", what, amqp_error_string2(r.library_error));
    default: return mgmt_fail(m, MG_FAILED, "%s failed", what);
    }
}

/* What is left to close after a failure, so the goodbye is the one AMQP expects. */
enum { ST_NONE, ST_OPEN, ST_CHANNEL_CLOSED, ST_CONNECTION_CLOSED, ST_LOST };
static int state_after(amqp_rpc_reply_t r, int st) {
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ST_CHANNEL_CLOSED;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        return ST_CONNECTION_CLOSED;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        return ST_LOST;
    return st;
}

/* The AMQP URI: --uri, an amqp(s):// FERRY_URL, or --url / FERRY_URL / the default's user
 * and host on port 5672. */
static int amqp_target(mgmt *m, const char *uri, char *out, size_t n) {
    const char *env = getenv("FERRY_URL");
    if (uri) {
        snprintf(out, n, "%s", uri);
        return 0;
    }
    if (!m->url && env && (strncmp(env, "amqp://", 7) == 0 || strncmp(env, "amqps://", 8) == 0)) {
        snprintf(out, n, "%s", env);
        return 0;
    }
    CURLU *u = curl_url();
    char *host = NULL, eu[768], ep[768];
    if (!u || curl_url_set(u, CURLUPART_URL, m->base, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        return -1;
    }
    snprintf(out, n, "amqp://%s:%s@%s:5672/", mgmt_esc(m->user, eu, sizeof eu), mgmt_esc(m->pass, ep, sizeof ep),
             host);
    curl_free(host);
    curl_url_cleanup(u);
    return 0;
}

static const char consume_usage[] =
    "usage: ferry consume QUEUE [--count N] [--timeout DURATION] [--prefetch N] [--vhost V]\n"
    "                           [--json] [--uri amqp://...] [--cacert FILE]\n"
    "\n"
    "Consumes messages from a queue over AMQP (basic.consume) and prints each one, then\n"
    "acknowledges it (at-least-once: a message is acked only after it was printed; Ctrl-C\n"
    "stops cleanly and leaves the rest in the queue). Runs until Ctrl-C, --count or --timeout.\n"
    "\n"
    "  --count N        stop after N messages\n"
    "  --timeout D      stop after D (250ms, 5s, 1m...) without a message\n"
    "  --prefetch N     messages in flight to this consumer (default 100, or N of --count)\n"
    "  --vhost V        the queue's vhost (default: the URI's, else /)\n"
    "  --json           one JSON object per message and line (the shape of ferry get --json)\n"
    "  --uri URI        amqp://user:pass@host:5672/vhost (amqps:// for TLS); else an amqp://\n"
    "                   FERRY_URL; else the user and host of --url / FERRY_URL on port 5672\n"
    "  --cacert FILE    amqps: verify the broker's certificate against this CA (PEM)\n"
    "\n"
    "Exit status: 0 ok (Ctrl-C, --count reached, or --timeout without --count), 1 the broker\n"
    "refused (no such queue, login refused, consumer cancelled) or --timeout came before --count\n"
    "messages, 2 bad usage, 3 the broker cannot be reached.\n";

int mgmt_consume_main(int argc, char **argv) {
    mgmt m = {.cmd = "consume", .usage = consume_usage};
    long count = 0, timeout_ms = 0, prefetch = 0;
    const char *uri = NULL, *cacert = NULL;
    const mopt opts[] = {{"--count", MO_LONG, &count, 1, 1L << 40},
                         {"--timeout", MO_DUR_MS, &timeout_ms, 1, 1L << 40},
                         {"--prefetch", MO_LONG, &prefetch, 1, 65535},
                         {"--uri", MO_STR, &uri, 0, 0},
                         {"--cacert", MO_STR, &cacert, 0, 0},
                         {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 1, 1, &npos);
    if (rc >= 0)
        return rc;
    mgmt_free(&m);
    char url[4096];
    struct amqp_connection_info ci;
    if (amqp_target(&m, uri, url, sizeof url) < 0 || amqp_parse_url(url, &ci) != AMQP_STATUS_OK)
        return mgmt_usage_error(&m, "%s is not an AMQP URI such as amqp://user:pass@host:5672/",
                                uri ? "--uri" : "the broker URL");
    /* amqp://host:5672/ means vhost "/" here, as everywhere in Ferry ("%2F" works too). */
    if (!ci.vhost || !*ci.vhost)
        ci.vhost = "/";
    if (m.vhost)
        ci.vhost = (char *)m.vhost;
    if (!prefetch)
        prefetch = count && count < 100 ? count : 100;

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = ci.ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    if (!sock) {
        amqp_destroy_connection(conn);
        return mgmt_fail(&m, MG_FAILED, "cannot create a socket");
    }
    if (ci.ssl) {
        amqp_ssl_socket_set_verify_peer(sock, cacert != NULL);
        amqp_ssl_socket_set_verify_hostname(sock, cacert != NULL);
        if (cacert && amqp_ssl_socket_set_cacert(sock, cacert) != AMQP_STATUS_OK) {
            amqp_destroy_connection(conn);
            return mgmt_usage_error(&m, "--cacert: cannot read %s", cacert);
        }
    }
    struct timeval tv = {5, 0};
    int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        amqp_destroy_connection(conn);
        return mgmt_fail(&m, MG_UNREACHABLE, "cannot reach the broker at %s:%d: %s", ci.host, ci.port,
                         amqp_error_string2(st));
    }
    rc = MG_OK;
    amqp_rpc_reply_t r = amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = amqp_failure(&m, "login", r);
        amqp_destroy_connection(conn);
        return rc;
    }
    int state = ST_OPEN;
    amqp_channel_open(conn, 1);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = amqp_failure(&m, "channel.open", r);
        state = state_after(r, ST_NONE);
        goto close;
    }
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = amqp_failure(&m, "basic.qos", r);
        state = state_after(r, state);
        goto close;
    }
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(pos[0]), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rc = amqp_failure(&m, "basic.consume", r);
        state = state_after(r, state);
        goto close;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    long got = 0;
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (!g_stop && (!count || got < count)) {
        amqp_envelope_t env;
        struct timeval wait = {0, 200000}; /* wake up to see Ctrl-C and the idle timeout */
        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &env, &wait, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            json_t *msg = envelope_to_json(&env);
            if (m.json) {
                char *s = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
                if (s)
                    puts(s);
                free(s);
            } else {
                mgmt_print_message(msg, (int)got + 1, stdout);
            }
            json_decref(msg);
            int out_ok = fflush(stdout) == 0 && !ferror(stdout);
            if (out_ok)
                amqp_basic_ack(conn, 1, env.delivery_tag, 0);
            amqp_destroy_envelope(&env);
            if (!out_ok) {
                /* Nobody reads our output any more: leave the message unacked (it goes back). */
                rc = mgmt_fail(&m, MG_FAILED, "cannot write the output; stopping (the message stays queued)");
                break;
            }
            got++;
            clock_gettime(CLOCK_MONOTONIC, &last);
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long idle = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
            if (timeout_ms && idle >= timeout_ms) {
                if (count)
                    rc = mgmt_fail(&m, MG_FAILED, "timed out after %ld of %ld messages", got, count);
                break;
            }
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            /* Something else than a delivery: the broker cancelled us or closed the channel. */
            amqp_frame_t f;
            if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK) {
                rc = mgmt_fail(&m, MG_FAILED, "lost the connection to the broker");
                state = ST_LOST;
                break;
            }
            if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
                rc = mgmt_fail(&m, MG_FAILED, "the broker cancelled the consumer (queue '%s' deleted?)", pos[0]);
                break;
            }
            if (f.frame_type == AMQP_FRAME_METHOD && (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                                                      f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
                amqp_rpc_reply_t rr = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f.payload.method};
                rc = amqp_failure(&m, "consume", rr);
                state = state_after(rr, state);
                break;
            }
            continue; /* e.g. basic.ack of nothing, heartbeats: ignore */
        }
        rc = amqp_failure(&m, "consume", r);
        state = state_after(r, state);
        break;
    }
close:
    if (state == ST_OPEN)
        amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    if (state == ST_CHANNEL_CLOSED) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(conn, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    }
    if (state == ST_CONNECTION_CLOSED) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else if (state != ST_LOST) {
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
    return rc;
}
