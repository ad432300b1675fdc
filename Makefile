# ferry: plain make. `make` builds into build/; `make check` tests;
# `make run` runs; `make bench` benchmarks. See README.md.

CC      ?= cc
# OPT and SAN are separate so that `make check-asan` can change them
# without losing the warnings; CFLAGS stays free for the user.
OPT     ?= -O2
SAN     ?=
CFLAGS  ?=
XCFLAGS  = -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -MMD -MP -fPIC $(SAN) $(CFLAGS)
XLDFLAGS = $(SAN) $(LDFLAGS)
CPPFLAGS += -Idaemon -Iclient-stub/c -I$(B)/gen
LDLIBS_D = -luv -lhiredis -lcbor -lrabbitmq -lprotobuf-c -lz -ldl -lpthread -lm
LDLIBS_C = -lcbor

B ?= build
MAKEFLAGS += --no-print-directory

DAEMON_SRC = $(wildcard daemon/*.c)
DAEMON_LIB_SRC = $(filter-out daemon/main.c,$(DAEMON_SRC))
LIBFERRY_SRC = client-stub/c/ferry.c
CLI_SRC = client-stub/c/ferry_cli.c client-stub/c/cli_run.c
BENCH_SRC = tests/bench/ferry_bench.c
UNIT_SRC = $(wildcard tests/unit/test_*.c)

# The OTLP messages, compiled by protoc-c at build time (never committed).
PROTO_SRC = $(shell find proto -name '*.proto')
GEN_C = $(PROTO_SRC:proto/%.proto=$(B)/gen/%.pb-c.c)
GEN_OBJ = $(GEN_C:%.c=%.o)

DAEMON_OBJ = $(DAEMON_SRC:%.c=$(B)/obj/%.o) $(GEN_OBJ)
DAEMON_LIB_OBJ = $(DAEMON_LIB_SRC:%.c=$(B)/obj/%.o) $(GEN_OBJ)
LIBFERRY_OBJ = $(LIBFERRY_SRC:%.c=$(B)/obj/%.o)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.SECONDARY:
.PHONY: units all deps check check-unit check-integration check-asan run bench clean install install-systemd conf-check

all: $(B)/ferryd $(B)/ferry $(B)/libferry.a $(B)/libferry.so $(B)/ferry-bench $(B)/libferry_check $(B)/amqp-bench $(B)/otlp-sink

$(B)/obj/%.o: %.c | $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(XCFLAGS) -c -o $@ $<

$(B)/gen/%.pb-c.c $(B)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(B)/gen
	protoc-c --proto_path=proto --c_out=$(B)/gen $<

$(B)/gen/%.pb-c.o: $(B)/gen/%.pb-c.c
	$(CC) $(CPPFLAGS) $(XCFLAGS) -c -o $@ $<

$(B)/ferryd: $(DAEMON_OBJ)
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_D)

$(B)/libferry.a: $(LIBFERRY_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library under its soname, which programs linked with
# -lferry record and look for at run time, and the unversioned name that
# -lferry finds when linking: the same pair `make install` puts in $(PREFIX)/lib.
$(B)/libferry.so.1: $(LIBFERRY_OBJ)
	$(CC) $(XLDFLAGS) -shared -Wl,-soname,libferry.so.1 -o $@ $^ $(LDLIBS_C)

$(B)/libferry.so: $(B)/libferry.so.1
	ln -sf libferry.so.1 $@

$(B)/ferry: $(CLI_SRC:%.c=$(B)/obj/%.o) $(B)/libferry.a
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_C)

# A test driver for libferry against a live ferryd (tests/integration).
$(B)/libferry_check: $(B)/obj/tests/integration/c/libferry_check.o $(B)/libferry.a
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_C)

# The direct rabbitmq-c baseline for make bench.
$(B)/amqp-bench: $(B)/obj/tests/bench/amqp_bench.o
	$(CC) $(XLDFLAGS) -o $@ $^ -lrabbitmq

# The local collector of make bench's tracing rows.
$(B)/otlp-sink: $(B)/obj/tests/bench/otlp_sink.o
	$(CC) $(XLDFLAGS) -o $@ $^

$(B)/ferry-bench: $(B)/obj/$(BENCH_SRC:.c=.o) $(B)/libferry.a
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_C) -lm

units: $(UNIT_BIN)

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(DAEMON_LIB_OBJ) $(B)/libferry.a
	@mkdir -p $(dir $@)
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_D) -lcmocka

# Every Debian package that the build, the tests and the benchmarks need.
# Idempotent: it installs only what is missing, and nothing when all is there.
DEB_PKGS = build-essential pkg-config libuv1-dev libhiredis-dev libcbor-dev librabbitmq-dev \
	libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev libssl-dev zlib1g-dev \
	python3-protobuf protobuf-compiler openssl \
	rabbitmq-server amqp-tools \
	redis-server redis-tools nutcracker python3-pytest python3-cbor2 \
	libcmocka-dev valgrind clang libclang-rt-14-dev
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

check: deps
	$(MAKE) all units
	$(MAKE) check-unit check-integration

check-unit: $(UNIT_BIN)
	@pass=0; fail=0; for t in $(UNIT_BIN); do \
		if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	done; echo "unit test binaries: $$pass passed, $$fail failed"; [ $$fail = 0 ]

check-integration: all
	cd tests/integration && FERRY_BUILD=$(abspath $(B)) /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# The same suites under AddressSanitizer and UndefinedBehaviorSanitizer.
check-asan: deps
	$(MAKE) B=build-asan CC=clang OPT=-O1 SAN="$(ASAN_FLAGS)" all units
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(MAKE) B=build-asan check-unit
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 FERRY_SANITIZED=1 \
		$(MAKE) B=build-asan check-integration

# Runs ferryd in the foreground on ./run/ferry.sock, with a throwaway
# redis-server in ./run/ unless FERRY_REDIS_URL names another Redis.
run: deps all
	@mkdir -p run; rm -f run/ferry.sock; \
	if [ -z "$$FERRY_REDIS_URL" ]; then \
		redis-server --port 0 --unixsocket $(CURDIR)/run/redis.sock --save '' --appendonly no \
			--dir $(CURDIR)/run --logfile $(CURDIR)/run/redis.log \
			--daemonize yes --pidfile $(CURDIR)/run/redis.pid || exit 1; \
		FERRY_REDIS_URL=unix://$(CURDIR)/run/redis.sock; export FERRY_REDIS_URL; \
		trap 'kill $$(cat $(CURDIR)/run/redis.pid) 2>/dev/null' EXIT INT TERM; \
	fi; \
	echo "ferryd: Redis at $$FERRY_REDIS_URL; socket ./run/ferry.sock. Ctrl-C drains and stops."; \
	echo "In another shell:"; \
	echo "  export PATH=$(abspath $(B)):\$$PATH FERRY_SOCKET=$(CURDIR)/run/ferry.sock"; \
	echo "  ferry ping"; \
	OTEL_TRACES_EXPORTER=$${OTEL_TRACES_EXPORTER:-console} OTEL_METRICS_EXPORTER=$${OTEL_METRICS_EXPORTER:-none} \
		$(B)/ferryd --socket run/ferry.sock $(RUN_ARGS)

bench: deps all
	/usr/bin/python3 tests/bench/run_bench.py --build $(abspath $(B)) $(BENCH_ARGS)

PREFIX ?= /usr/local
# The library as ldconfig expects it: the file under its soname, and the
# unversioned link for linking; ldconfig runs only for a real install.
install: all
	install -D -m 0755 $(B)/ferryd $(DESTDIR)$(PREFIX)/sbin/ferryd
	install -D -m 0755 $(B)/ferry $(DESTDIR)$(PREFIX)/bin/ferry
	install -D -m 0644 $(B)/libferry.a $(DESTDIR)$(PREFIX)/lib/libferry.a
	install -D -m 0755 $(B)/libferry.so.1 $(DESTDIR)$(PREFIX)/lib/libferry.so.1
	ln -sf libferry.so.1 $(DESTDIR)$(PREFIX)/lib/libferry.so
	install -D -m 0644 client-stub/c/ferry.h $(DESTDIR)$(PREFIX)/include/ferry.h
	install -D -m 0644 conf/ferryd.conf $(DESTDIR)/etc/ferry/ferryd.conf
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then ldconfig; fi

# The systemd units (systemd/), with ExecStart= at the installed ferryd, and
# the ferry user and group they run as (sysusers.d).
# `install` should depend on this target; it is kept apart so the two
# can be merged without conflict.
SYSTEMDUNITDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
install-systemd:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR)
	install -D -m 0644 systemd/ferry.sysusers $(DESTDIR)$(SYSUSERSDIR)/ferry.conf
	sed 's|/usr/local/sbin/ferryd|$(or $(SBINDIR),$(PREFIX)/sbin)/ferryd|' systemd/ferryd.service \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/ferryd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/ferryd.service
	install -m 0644 systemd/ferryd.socket $(DESTDIR)$(SYSTEMDUNITDIR)/ferryd.socket
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then systemd-sysusers ferry.conf; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf build build-asan run

-include $(shell find $(B) build-asan -name '*.d' 2>/dev/null)
