/* tcpcopy.c — row 13's transient baseline: the bytes/s of a plain TCP copy between two C
 * processes on this machine, over loopback, with nothing in between.
 *
 * usage: tcpcopy CHUNK_BYTES SECONDS
 * The parent listens on an ephemeral 127.0.0.1 port and forks a child that connects and
 * write()s CHUNK_BYTES buffers for SECONDS; the parent read()s everything into a 256 KiB
 * buffer (the size ferryd reads with) and prints one JSON line: bytes, seconds, bytes_per_s.
 * The chunk is written whole each time (a loop over short writes), like a broker writing one
 * message's frames. Both processes share the machine's cores, as the broker and the load
 * generator do in row 13. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tcpcopy CHUNK_BYTES SECONDS\n");
        return 2;
    }
    size_t chunk = strtoul(argv[1], NULL, 10);
    double secs = atof(argv[2]);
    if (chunk == 0 || secs <= 0) {
        fprintf(stderr, "tcpcopy: CHUNK_BYTES and SECONDS must be positive\n");
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
        perror("tcpcopy: listen");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("tcpcopy: fork");
        return 1;
    }
    if (pid == 0) { /* the sender */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
            _exit(1);
        char *b = calloc(1, chunk);
        double end = now_s() + secs;
        while (now_s() < end) {
            for (size_t off = 0; off < chunk;) {
                ssize_t w = write(s, b + off, chunk - off);
                if (w <= 0)
                    _exit(1);
                off += (size_t)w;
            }
        }
        close(s);
        _exit(0);
    }
    int c = accept(ls, NULL, NULL);
    if (c < 0) {
        perror("tcpcopy: accept");
        return 1;
    }
    static char rb[256 * 1024];
    unsigned long long total = 0;
    double t0 = 0, t1 = 0;
    for (;;) {
        ssize_t r = read(c, rb, sizeof rb);
        if (r <= 0)
            break;
        if (!total)
            t0 = now_s();
        total += (unsigned long long)r;
        t1 = now_s();
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || t1 <= t0) {
        fprintf(stderr, "tcpcopy: the sender failed\n");
        return 1;
    }
    printf("{\"chunk\": %zu, \"bytes\": %llu, \"seconds\": %.4f, \"bytes_per_s\": %.1f}\n", chunk, total, t1 - t0,
           (double)total / (t1 - t0));
    return 0;
}
