/* main.c — ferryd: parse settings, claim the data directory, run the broker until SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker.h"
#include "mgmt.h"
#include "storeio.h"
#include "tls.h"
#include "util.h"

/* Creates the data directory if needed and locks it, so two brokers never share one. */
static int claim_data_dir(const char *dir, int *lock_fd) {
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        fprintf(stderr, "ferryd: cannot create data directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "ferryd: data directory %s is not a directory\n", dir);
        return -1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/ferryd.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "ferryd: data directory %s is not writable: %s\n", dir, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "ferryd: data directory %s is in use by another ferryd\n", dir);
        close(fd);
        return -1;
    }
    *lock_fd = fd;
    return 0;
}

int main(int argc, char **argv) {
    tls_count_heap(); /* before anything uses OpenSSL: its heap is counted as MEM_TLS */
    config cfg;
    char err[512];
    config_defaults(&cfg);
    int rc = config_parse_args(&cfg, argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "ferryd: %s\n", err);
        return 2;
    }
    log_level = cfg.log_level;
    log_json = cfg.log_json;
    if (sio_init() < 0)
        return 2;
    int lock_fd = -1;
    if (claim_data_dir(cfg.data_dir, &lock_fd) < 0)
        return 1;
    static broker b;
    if (broker_init(&b, &cfg) < 0) {
        broker_shutdown(&b);
        close(lock_fd);
        return 1;
    }
    /* the management API (its HTTP threads ask the loop; see mgmt.h) */
    if ((cfg.http_port || cfg.prometheus_port) && mgmt_start(&b) < 0) {
        mgmt_stop(&b);
        broker_shutdown(&b);
        close(lock_fd);
        return 1;
    }
    log_info("ferryd %s started (data directory %s)", FERRY_VERSION, cfg.data_dir);
    broker_run(&b);
    mgmt_stop(&b);
    broker_shutdown(&b);
    close(lock_fd);
    log_info("ferryd stopped");
    return 0;
}
