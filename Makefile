# Ferry — one Makefile (beanstalkd style). `make` builds the broker and the CLI;
# `make run` and `make test` first install whatever the machine is missing.

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Werror
BASE      = -std=c11 -D_GNU_SOURCE -Isrc -Iinclude $(PG_CFLAGS) $(WARN) -MMD -MP
LDLIBS    = -lpthread -lssl -lcrypto -ljansson
# ferryd's management API: libmicrohttpd (HTTP server), rabbitmq-c (its AMQP operations),
# libcurl (alert webhooks)
BROKER_LIBS = -lmicrohttpd -lrabbitmq -lcurl -lz
SAN       = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# The wire codec is shared by the broker, the CLI (load generator) and the fuzz target.
WIRE_SRC   = src/wire.c src/buf.c src/util.c src/names.c
BROKER_SRC = $(filter-out src/main.c $(WIRE_SRC),$(wildcard src/*.c))
CLI_SRC    = $(wildcard cli/*.c)
# libferry (lib/, include/ferry/): the application-side patterns on rabbitmq-c; the CLI's
# worker, publish and outbox commands are built on it.
LIB_SRC    = $(wildcard lib/*.c)
LIB_OBJ    = $(patsubst %.c,build/obj/%.o,$(LIB_SRC))
LIB_LIBS   = -lrabbitmq -ljansson -lpthread -lsqlite3 -lpq
# The outbox and the idempotent consumer write through the application's own SQLite (libsqlite3)
# or PostgreSQL (libpq) connection; Debian keeps libpq-fe.h in /usr/include/postgresql.
PG_CFLAGS := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)

# The dashboard's files (web/) compiled into ferryd: a C table generated at build time. The
# list of files is kept in build/gen/web_list.txt, rewritten only when it changes, so that an
# added or removed file regenerates the table.
WEB_LIST  := $(shell mkdir -p build/gen && find web -type f 2>/dev/null | LC_ALL=C sort > build/gen/web_list.new && \
               (cmp -s build/gen/web_list.new build/gen/web_list.txt || cp build/gen/web_list.new build/gen/web_list.txt); \
               echo build/gen/web_list.txt)
WEB_FILES  = $(shell cat build/gen/web_list.txt)
GEN_SRC    = build/gen/web_assets.c
BROKER_SRC += $(GEN_SRC)
build/gen/embed_web: scripts/embed_web.c
	@mkdir -p build/gen
	$(CC) -O1 -o $@ $<
build/gen/web_assets.c: build/gen/embed_web $(WEB_LIST) $(WEB_FILES)
	build/gen/embed_web web $(WEB_FILES) > $@.tmp && mv $@.tmp $@

OBJ        = $(patsubst %.c,build/obj/%.o,$(WIRE_SRC) $(BROKER_SRC) src/main.c)
CLI_OBJ    = $(patsubst %.c,build/obj/%.o,$(WIRE_SRC) $(CLI_SRC))
ASAN_OBJ   = $(patsubst %.c,build/asan/obj/%.o,$(WIRE_SRC) $(BROKER_SRC) src/main.c)

.DEFAULT_GOAL := all
.PHONY: all run test test-only bench fuzz clean asan deps-build deps-test deps-bench format

all: build/ferryd build/ferry build/libferry.a build/libferry.so build/libferry.pc

build/ferryd: $(OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(BROKER_LIBS)

# The CLI's management commands: libcurl (HTTP API), rabbitmq-c (`ferry consume`); worker,
# publish (and the outbox relay) are built on libferry.
CLI_LIBS   = -lcurl -lrabbitmq
build/ferry: $(CLI_OBJ) build/libferry.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) build/libferry.a $(LDLIBS) $(CLI_LIBS) $(LIB_LIBS) -lm

build/libferry.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^
build/libferry.so: $(LIB_OBJ)
	$(CC) $(CFLAGS) -shared -o $@ $^ $(LIB_LIBS)
# pkg-config file for using libferry from this tree without installing it:
#   PKG_CONFIG_PATH=$PWD/build pkg-config --cflags --libs libferry
build/libferry.pc: Makefile
	@mkdir -p build
	printf 'prefix=%s\nincludedir=$${prefix}/include\nlibdir=$${prefix}/build\n\nName: libferry\nDescription: Ferry application patterns (reliable publisher, worker, RPC, envelope, outbox, idempotent consumer) on rabbitmq-c\nVersion: 0.1\nRequires.private: librabbitmq jansson sqlite3 libpq\nCflags: -I$${includedir}\nLibs: -L$${libdir} -lferry\nLibs.private: -lrabbitmq -ljansson -lpthread -lsqlite3 -lpq\n' "$(CURDIR)" > $@

# The C test programs of tests/app/ (tests/app/c/*.c), linked with libferry's sources under
# ASan + UBSan; the pytest files build them with `make app-test-progs`.
APP_TEST_PROGS = $(patsubst tests/app/c/%.c,build/test/app/%,$(wildcard tests/app/c/*.c))
.PHONY: app-test-progs
app-test-progs: $(APP_TEST_PROGS)
build/test/app/%: tests/app/c/%.c $(LIB_SRC) $(wildcard lib/*.h include/ferry/*.h)
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -Iinclude -Ilib $(PG_CFLAGS) $(WARN) $(SAN) -g -O1 -o $@ $< $(LIB_SRC) $(LIB_LIBS)

# Issue 12's worker benchmark (its own section of bench/results/latest.md): `ferry worker`
# running /bin/true, the C API worker in-process, Celery on ferryd; medians of 3 runs.
.PHONY: bench-worker
build/bench/worker_capi: bench/worker_capi.c build/libferry.a
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Iinclude $(WARN) -O2 -g -o $@ $< build/libferry.a $(LIB_LIBS)
bench-worker: all build/bench/worker_capi
	/usr/bin/python3 bench/worker_jobs.py

build/obj/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE) -Ilib -fPIC $(CFLAGS) -c $< -o $@

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(CFLAGS) -c $< -o $@

# Sanitizer build of the broker: the integration tests run against it.
asan: build/asan/ferryd
build/asan/ferryd: $(ASAN_OBJ)
	clang $(SAN) -g -O1 -o $@ $^ $(LDLIBS) $(BROKER_LIBS)
build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(BASE) $(SAN) -g -O1 -c $< -o $@

deps-build:
	@scripts/install-deps.sh build
deps-test:
	@scripts/install-deps.sh test
deps-bench:
	@scripts/install-deps.sh bench

run: deps-build all
	@mkdir -p data
	build/ferryd --port 5672 --data-dir ./data

test: deps-test
	$(MAKE) all asan
	@tests/run.sh

# Runs the tests without the dependency check (for quick iterations).
test-only: all asan
	@tests/run.sh

# bench/run.sh builds what it needs; a broken ferryd build leaves its column n/a.
bench: deps-bench
	@bench/run.sh

# libFuzzer targets (ASan + UBSan; LeakSanitizer runs at the end of each): fuzz_wire, the
# wire decoders; fuzz_conn, whole connections driven in process (fuzz/fuzz_conn.c).
# `make fuzz` runs each for FUZZ_SECONDS (default 300), or for FUZZ_RUNS executions, with
# FUZZ_JOBS workers (scripts/fuzz.sh).
FUZZ_FLAGS   = -std=c11 -D_GNU_SOURCE -Isrc $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_OBJ     = $(patsubst %.c,build/fuzz/obj/%.o,$(WIRE_SRC) $(BROKER_SRC))
fuzz: deps-test
	@scripts/fuzz.sh
build/fuzz/fuzz_wire: fuzz/fuzz_wire.c $(WIRE_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $^
build/fuzz/fuzz_cron: fuzz/fuzz_cron.c src/cronexpr.c src/tzfile.c src/util.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $^
build/fuzz/fuzz_conn: build/fuzz/obj/fuzz/fuzz_conn.o $(FUZZ_OBJ)
	clang $(FUZZ_FLAGS) -o $@ $^ $(LDLIBS) $(BROKER_LIBS)
# Objects for fuzz_conn: instrumented for coverage, linked without a main.
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(BASE) -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
	  -fno-omit-frame-pointer -DREAD_CHUNK=65536 -c $< -o $@

format:
	clang-format -i src/*.c src/*.h cli/*.c fuzz/*.c

clean:
	rm -rf build

# (fuzz_conn.o is not in FUZZ_OBJ: without its own .d it kept a stale layout of broker.h's
# structs after they changed, and the fuzz smoke run reported bogus crashes)
-include $(OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(LIB_OBJ:.o=.d) $(ASAN_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d) build/fuzz/obj/fuzz/fuzz_conn.d

# Durable storage (issue 3): the long crash and power-cut runs, and the store benchmarks.
.PHONY: soak bench-store
soak: all asan
	cd tests && FERRY_SOAK=1 FERRYD=$${FERRYD:-$(CURDIR)/build/asan/ferryd} /usr/bin/python3 -m pytest store -q -p no:cacheprovider
	cd tests && FERRY_SOAK=1 FERRYD=$${FERRYD:-$(CURDIR)/build/asan/ferryd} /usr/bin/python3 -m pytest hostile/test_random_ops.py -q -s -p no:cacheprovider
	cd tests && FERRY_SOAK=1 FERRYD=$${FERRYD:-$(CURDIR)/build/asan/ferryd} /usr/bin/python3 -m pytest streams/test_streams_faults.py -q -p no:cacheprovider
bench-store: all
	/usr/bin/python3 bench/store/store_bench.py $(BENCH_STORE_ARGS)

# Issue 8: the bounded load test on loopback (5,000 connections churning, 10 confirm
# publishers, 1,000 consumers that never read, a flood past the memory watermark) against
# the optimised build; `make test` runs a scaled-down version (tests/load/test_load_smoke.py).
.PHONY: load
load: all
	/usr/bin/python3 tests/load/loadtest.py $(LOAD_ARGS)

# Issue 12: every application-side test (tests/app) against ferryd, a single RabbitMQ and the
# 3-node RabbitMQ cluster with quorum queues; `make test` runs all of them on ferryd and the
# tests marked cluster_short on the two RabbitMQs.
.PHONY: test-app-cluster
test-app-cluster: all asan
	cd tests && FERRY_APP_CLUSTER=all FERRYD=$${FERRYD:-$(CURDIR)/build/asan/ferryd} /usr/bin/python3 -m pytest app -q -p no:cacheprovider

# Issue 12, must-show 3: outbox relay events/s from PostgreSQL into ferryd (median and spread of
# 3 runs per batch size), written to its own section of bench/results/latest.md.
.PHONY: bench-outbox
bench-outbox: deps-test all
	/usr/bin/python3 bench/outbox_relay.py $(BENCH_OUTBOX_ARGS)
