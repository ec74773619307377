/* worker.c — `ferry worker`: runs a command per message, from any language, on libferry's
 * worker (retry policy, dead-letter queue, x-retry-delays or retry queues, SIGTERM drains).
 *
 * Each job is CMD spawned in its own process group (so a timeout kills what it started,
 * and a terminal's Ctrl-C reaches the worker, which then lets running jobs finish) with the
 * body on stdin and the message's metadata in FERRY_* environment variables. Exit status
 * → handler result: 0 → FERRY_OK; 65 (EX_DATAERR) → FERRY_FAIL; any other exit, a signal or
 * the --timeout → FERRY_RETRY, with x-ferry-failure "exit N", "signal N" or "timeout".
 * With reply_to set, stdout is captured and becomes the reply. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "amqp_url.h"
#include "ferry/ferry.h"
#include "ferry/worker.h"

extern char **environ;

static const char usage[] =
    "usage: ferry worker --queue Q [--concurrency N] [--prefetch N] [--retry 1s,5s,30s,5m] [--timeout 30s]\n"
    "                    [--dead-letter-queue Q.dead] [--schema-versions 1,2] [--queue-type quorum] [--uri URI]\n"
    "                    -- CMD [ARGS...]\n"
    "\n"
    "Runs CMD once per message of Q: the body on stdin; FERRY_MESSAGE_ID, FERRY_CORRELATION_ID,\n"
    "FERRY_ROUTING_KEY, FERRY_ATTEMPT (1 on the first run) and FERRY_HEADERS (JSON) in its environment.\n"
    "Exit 0 acks; exit 65 dead-letters at once; any other exit, a signal or the timeout retries after\n"
    "the next delay (at most 1 + number of delays runs), then dead-letters. Dead letters carry\n"
    "x-ferry-failure (exit 65, exit 1, signal 9, timeout, unknown_schema_version) and x-death.\n"
    "With reply_to set, CMD's stdout is published as the reply (with the correlation id).\n"
    "SIGTERM/SIGINT: no new jobs, running ones finish, then exit 0.\n"
    "\n"
    "  --queue Q               queue to consume (declared durable if missing)\n"
    "  --concurrency N         jobs at once (default 1, at most 1024)\n"
    "  --prefetch N            unacked messages held (default: concurrency)\n"
    "  --retry LIST            delays before the 2nd, 3rd... run (default 1s,5s,30s,5m; \"\" for none)\n"
    "  --timeout D             kill a job (its process group) after D (default: no limit)\n"
    "  --dead-letter-queue Q   where failed messages go (default Q.dead)\n"
    "  --schema-versions LIST  accepted cloudEvents:schemaversion values; others are dead-lettered\n"
    "                          (unknown_schema_version) without running CMD\n"
    "  --queue-type T          x-queue-type of the queues it declares (classic, quorum)\n"
    "  --uri URI               amqp://user:pass@host:port/vhost (else FERRY_URL, else amqp://guest:guest@127.0.0.1:5672/)\n"
    "\n"
    "Exit 0 after a clean stop, 1 the broker refused the set-up, 2 bad usage, 3 cannot reach the broker.\n";

typedef struct cmd_ctx {
    char **argv;
    int64_t timeout_ms;
} cmd_ctx;

static ferry_worker *the_worker;

static void on_signal(int sig) {
    (void)sig;
    ferry_worker_stop(the_worker);
}

static void log_line(void *arg, const char *line) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld ferry worker: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, line);
}

/* environ + the job's variables (ours replace inherited ones of the same name) */
static char **job_env(const ferry_job *j, size_t *first_ours) {
    const ferry_message *m = ferry_job_message(j);
    const char *names[] = {"FERRY_MESSAGE_ID", "FERRY_CORRELATION_ID", "FERRY_ROUTING_KEY", "FERRY_ATTEMPT",
                           "FERRY_HEADERS"};
    char attempt[16];
    snprintf(attempt, sizeof attempt, "%d", ferry_job_attempt(j));
    char *headers = ferry_message_headers_json(m);
    const char *mid = ferry_message_property(m, "message_id");
    const char *corr = ferry_message_property(m, "correlation_id");
    const char *rk = ferry_message_routing_key(m);
    const char *vals[] = {mid ? mid : "", corr ? corr : "", rk ? rk : "", attempt, headers ? headers : "{}"};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 6, sizeof *env);
    if (!env) {
        free(headers);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ours = 0;
        for (size_t v = 0; v < 5; v++) {
            size_t l = strlen(names[v]);
            if (strncmp(environ[i], names[v], l) == 0 && environ[i][l] == '=')
                ours = 1;
        }
        if (!ours)
            env[k++] = environ[i];
    }
    size_t first = k;
    for (size_t v = 0; v < 5; v++) {
        size_t l = strlen(names[v]) + strlen(vals[v]) + 2;
        env[k] = malloc(l);
        if (env[k])
            snprintf(env[k++], l, "%s=%s", names[v], vals[v]);
    }
    env[k] = NULL;
    free(headers);
    *first_ours = first; /* the caller frees from there */
    return env;
}

static void free_env(char **env, size_t first) {
    for (size_t i = first; env[i]; i++)
        free(env[i]);
    free(env);
}

static int run_cmd(ferry_job *j, void *arg) {
    cmd_ctx *ctx = arg;
    const ferry_message *m = ferry_job_message(j);
    int want_reply = ferry_message_property(m, "reply_to") != NULL;
    size_t n_environ = 0;
    char **env = job_env(j, &n_environ);
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (!env || pipe2(in, O_CLOEXEC) < 0 || (want_reply && pipe2(out, O_CLOEXEC) < 0)) {
        ferry_job_set_failure(j, "cannot start: out of resources");
        if (env)
            free_env(env, n_environ);
        return FERRY_RETRY;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    if (want_reply)
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, all;
    sigemptyset(&none);
    sigemptyset(&all);
    sigaddset(&all, SIGTERM);
    sigaddset(&all, SIGINT);
    sigaddset(&all, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int se = posix_spawnp(&pid, ctx->argv[0], &fa, &at, ctx->argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free_env(env, n_environ);
    close(in[0]);
    if (want_reply)
        close(out[1]);
    if (se != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot start %s: %s", ctx->argv[0], strerror(se));
        ferry_job_set_failure(j, why);
        close(in[1]);
        if (want_reply)
            close(out[0]);
        return FERRY_RETRY;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t blen;
    const char *body = ferry_message_body(m, &blen);
    size_t off = 0;
    if (blen == 0) {
        close(in[1]);
        in[1] = -1;
    }
    char *rbuf = NULL;
    size_t rlen = 0, rcap = 0;
    int64_t deadline = ctx->timeout_ms ? ferry_now_ms() + ctx->timeout_ms : 0;
    int timed_out = 0, exited = 0, status = 0;
    while (!exited) {
        struct pollfd p[3];
        int np = 0, iw = -1, ir = -1, ip = -1;
        if (in[1] >= 0) {
            p[np] = (struct pollfd){in[1], POLLOUT, 0};
            iw = np++;
        }
        if (want_reply && out[0] >= 0) {
            p[np] = (struct pollfd){out[0], POLLIN, 0};
            ir = np++;
        }
        if (pidfd >= 0) {
            p[np] = (struct pollfd){pidfd, POLLIN, 0};
            ip = np++;
        }
        int wait = 50; /* without a pidfd, waitpid is polled */
        if (pidfd >= 0)
            wait = 1000;
        if (deadline) {
            int64_t left = deadline - ferry_now_ms();
            if (left <= 0) {
                kill(-pid, SIGKILL);
                timed_out = 1;
                waitpid(pid, &status, 0);
                break;
            }
            if (left < wait)
                wait = (int)left;
        }
        poll(p, (nfds_t)np, wait);
        if (iw >= 0 && p[iw].revents) {
            ssize_t w = write(in[1], body + off, blen - off);
            if (w > 0)
                off += (size_t)w;
            if ((w < 0 && errno != EAGAIN) || off == blen) { /* EPIPE: CMD did not read it all */
                close(in[1]);
                in[1] = -1;
            }
        }
        if (ir >= 0 && p[ir].revents) {
            if (rcap - rlen < 4096) {
                size_t nc = rcap ? rcap * 2 : 8192;
                char *nb = realloc(rbuf, nc);
                if (nb) {
                    rbuf = nb;
                    rcap = nc;
                }
            }
            ssize_t r = rcap > rlen ? read(out[0], rbuf + rlen, rcap - rlen) : -1;
            if (r > 0)
                rlen += (size_t)r;
            else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                close(out[0]);
                out[0] = -1;
            }
        }
        if ((ip >= 0 && p[ip].revents) || pidfd < 0) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                exited = 1;
        }
    }
    /* the rest of stdout (a child that exited with data still in the pipe) */
    while (want_reply && out[0] >= 0 && !timed_out) {
        if (rcap - rlen < 4096) {
            size_t nc = rcap ? rcap * 2 : 8192;
            char *nb = realloc(rbuf, nc);
            if (!nb)
                break;
            rbuf = nb;
            rcap = nc;
        }
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        ssize_t r = read(out[0], rbuf + rlen, rcap - rlen);
        if (r <= 0)
            break;
        rlen += (size_t)r;
    }
    if (in[1] >= 0)
        close(in[1]);
    if (out[0] >= 0)
        close(out[0]);
    if (pidfd >= 0)
        close(pidfd);
    char why[64];
    int result;
    if (timed_out) {
        ferry_job_set_failure(j, "timeout");
        result = FERRY_RETRY;
    } else if (WIFSIGNALED(status)) {
        snprintf(why, sizeof why, "signal %d", WTERMSIG(status));
        ferry_job_set_failure(j, why);
        result = FERRY_RETRY;
    } else {
        int code = WEXITSTATUS(status);
        snprintf(why, sizeof why, "exit %d", code);
        ferry_job_set_failure(j, why);
        result = code == 0 ? FERRY_OK : code == 65 ? FERRY_FAIL : FERRY_RETRY;
    }
    if (result == FERRY_OK && want_reply)
        ferry_job_set_reply(j, rbuf ? rbuf : "", rlen);
    free(rbuf);
    return result;
}

static int bad(const char *msg, const char *arg) {
    fprintf(stderr, "ferry worker: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

static int parse_int(const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

int worker_main(int argc, char **argv) {
    const char *queue = NULL, *dlq = NULL, *uri_flag = NULL, *retry = "1s,5s,30s,5m", *schemas = NULL,
               *qtype = NULL;
    long concurrency = 1, prefetch = 0;
    int64_t timeout_ms = 0;
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        int takes = strcmp(a, "--queue") == 0 || strcmp(a, "--concurrency") == 0 || strcmp(a, "--prefetch") == 0 ||
                    strcmp(a, "--retry") == 0 || strcmp(a, "--timeout") == 0 ||
                    strcmp(a, "--dead-letter-queue") == 0 || strcmp(a, "--schema-versions") == 0 ||
                    strcmp(a, "--uri") == 0 || strcmp(a, "--queue-type") == 0;
        if (!takes)
            return bad("unknown flag", a);
        if (!v)
            return bad("missing value for", a);
        i++;
        if (strcmp(a, "--queue") == 0)
            queue = v;
        else if (strcmp(a, "--dead-letter-queue") == 0)
            dlq = v;
        else if (strcmp(a, "--uri") == 0)
            uri_flag = v;
        else if (strcmp(a, "--retry") == 0)
            retry = v;
        else if (strcmp(a, "--schema-versions") == 0)
            schemas = v;
        else if (strcmp(a, "--queue-type") == 0) {
            if (strcmp(v, "classic") != 0 && strcmp(v, "quorum") != 0)
                return bad("--queue-type wants classic or quorum, got", v);
            qtype = strcmp(v, "quorum") == 0 ? v : NULL;
        } else if (strcmp(a, "--concurrency") == 0) {
            if (parse_int(v, 1, 1024, &concurrency) < 0)
                return bad("--concurrency wants 1..1024, got", v);
        } else if (strcmp(a, "--prefetch") == 0) {
            if (parse_int(v, 1, 65535, &prefetch) < 0)
                return bad("--prefetch wants 1..65535, got", v);
        } else if (strcmp(a, "--timeout") == 0) {
            if (ferry_parse_duration(v, &timeout_ms) < 0 || timeout_ms <= 0)
                return bad("--timeout wants a duration like 30s, got", v);
        }
    }
    if (!queue || !*queue)
        return bad("--queue is required", NULL);
    if (strlen(queue) > 200 || (dlq && strlen(dlq) > 255))
        return bad("queue name too long:", queue);
    if (i >= argc)
        return bad("missing -- CMD [ARGS...]", NULL);
    int64_t *delays = NULL;
    size_t nretry = 0;
    if (ferry_parse_durations(retry, &delays, &nretry) < 0)
        return bad("--retry wants durations like 1s,5s,30s,5m, got", retry);
    for (size_t k = 0; k < nretry; k++)
        if (delays[k] > 0xffffffffLL) {
            free(delays);
            return bad("--retry delay too long (at most 49d):", retry);
        }
    int64_t *versions = NULL;
    size_t nversions = 0;
    if (schemas) {
        /* a list of positive integers, parsed like durations' commas */
        size_t cap = 1;
        for (const char *p = schemas; *p; p++)
            cap += *p == ',';
        versions = calloc(cap, sizeof *versions);
        char *copy = strdup(schemas);
        char *save = NULL;
        int ok = versions && copy && *schemas && schemas[strlen(schemas) - 1] != ',' && !strstr(schemas, ",,") &&
                 schemas[0] != ',';
        for (char *t = ok ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
            long n;
            if (parse_int(t, 1, 2147483647L, &n) < 0) {
                ok = 0;
                break;
            }
            versions[nversions++] = n;
        }
        free(copy);
        if (!ok || nversions == 0) {
            free(delays);
            free(versions);
            return bad("--schema-versions wants positive integers like 1,2, got", schemas);
        }
    }
    char uri[1024];
    cli_amqp_uri(uri_flag, uri, sizeof uri);
    cmd_ctx ctx = {argv + i, timeout_ms};
    ferry_worker_opts o;
    ferry_worker_opts_init(&o);
    o.queue = queue;
    o.dead_letter_queue = dlq;
    o.concurrency = (int)concurrency;
    o.prefetch = (int)prefetch;
    o.retry_delays_ms = delays;
    o.nretry = nretry;
    o.schema_versions = versions;
    o.nschema = nversions;
    o.queue_type = qtype;
    o.log = log_line;
    ferry_conn_opts co;
    ferry_conn_opts_init(&co);
    co.connection_name = "ferry worker";
    ferry_worker *w = NULL;
    int rc = ferry_worker_new(&w, uri, &co, &o, run_cmd, &ctx);
    free(delays);
    free(versions);
    if (rc < 0) {
        fprintf(stderr, "ferry worker: cannot start on %s: %s\n", uri, ferry_strerror(rc));
        return rc == FERRY_EINVAL ? 2 : rc == FERRY_ECONNECT || rc == FERRY_ETIMEDOUT ? 3 : 1;
    }
    the_worker = w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = ferry_worker_run(w);
    ferry_worker_free(w);
    return rc < 0 ? 1 : 0;
}
