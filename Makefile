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
# Each folder of daemon/ is one layer (docs/design.md); headers are named
# without their folder, so every folder is on the include path.
DAEMON_DIRS = $(shell find daemon -type d)
CPPFLAGS += $(addprefix -I,$(DAEMON_DIRS)) -Iclient-stub/c -I$(B)/gen
LDLIBS_D = -luv -lhiredis -lcbor -lrabbitmq -lprotobuf-c -lssl -lcrypto -lz -ldl -lpthread -lm
LDLIBS_C = -lcbor

B ?= build
MAKEFLAGS += --no-print-directory

DAEMON_SRC = $(shell find daemon -name '*.c' | sort)
DAEMON_LIB_SRC = $(filter-out daemon/main.c,$(DAEMON_SRC))
LIBFERRY_SRC = client-stub/c/ferry.c
CLI_SRC = $(wildcard client-stub/c/cli_*.c) client-stub/c/ferry_cli.c
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
.PHONY: units all deps fuzz fuzzers check check-layout check-unit check-integration check-asan check-deploy k8s-validate-deps run bench clean install install-systemd uninstall man conf-check

all: $(B)/ferryd $(B)/ferry $(B)/libferry.a $(B)/libferry.so $(B)/ferry-bench $(B)/libferry_check $(B)/amqp-bench $(B)/otlp-sink $(B)/lock-bench

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

# The direct hiredis baseline of make bench's lock row.
$(B)/lock-bench: $(B)/obj/tests/bench/lock_bench.o $(B)/libferry.a
	$(CC) $(XLDFLAGS) -o $@ $^ $(LDLIBS_C) -lhiredis

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
# For tests/deploy: podman with runc (crun fails here), catatonit for the
# pause image of `podman kube play`, CNI plugins for its pod network (one
# of podman's alternatives, named so that apt does not pick), debootstrap
# for the base images.
# Idempotent: it installs only what is missing, and nothing when all is there.
DEB_PKGS = build-essential pkg-config libuv1-dev libhiredis-dev libcbor-dev librabbitmq-dev \
	libprotobuf-c-dev protobuf-c-compiler libcurl4-openssl-dev libssl-dev zlib1g-dev \
	python3-protobuf protobuf-compiler openssl \
	rabbitmq-server amqp-tools \
	redis-server redis-tools nutcracker python3-pytest python3-cbor2 \
	libcmocka-dev valgrind clang libclang-rt-14-dev \
	groff-base mandoc python3-yaml \
	podman runc catatonit containernetworking-plugins iptables debootstrap
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
	$(MAKE) check-layout check-unit check-integration

# The architecture of daemon/ (layers, no include circles, file sizes,
# names outside the libraries' namespaces), as docs/design.md draws it.
check-layout:
	/usr/bin/python3 tests/layout/check_layout.py

check-unit: $(UNIT_BIN)
	@pass=0; fail=0; for t in $(UNIT_BIN); do \
		if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	done; echo "unit test binaries: $$pass passed, $$fail failed"; [ $$fail = 0 ]

check-integration: all
	cd tests/integration && FERRY_BUILD=$(abspath $(B)) /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The Kubernetes schema validator of tests/deploy: npm packages pinned in
# deploy/k8s/validate/package-lock.json, installed in that directory only.
K8S_VALIDATE = deploy/k8s/validate
$(K8S_VALIDATE)/node_modules/.package-lock.json: $(K8S_VALIDATE)/package.json $(K8S_VALIDATE)/package-lock.json
	@command -v npm >/dev/null || { echo "make: npm (node 20) is needed to validate deploy/k8s" >&2; exit 1; }
	cd $(K8S_VALIDATE) && npm ci --no-audit --no-fund --loglevel=error
k8s-validate-deps: $(K8S_VALIDATE)/node_modules/.package-lock.json

# The deployment: the image from deploy/Containerfile, deploy/k8s checked
# and its pod run under podman (tests/deploy). Builds images the first time.
check-deploy: deps all k8s-validate-deps
	cd tests/deploy && /usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# The same suites under AddressSanitizer and UndefinedBehaviorSanitizer.
check-asan: deps
	$(MAKE) B=build-asan CC=clang OPT=-O1 SAN="$(ASAN_FLAGS)" all units
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(MAKE) B=build-asan check-unit
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 FERRY_SANITIZED=1 \
		$(MAKE) B=build-asan check-integration

# libFuzzer harnesses for every parser that sees outside bytes
# (tests/fuzz/), built with clang into build-fuzz and run one after the
# other for FUZZ_SECONDS each, from the committed seeds. A crash leaves its
# input in build-fuzz/ and fails the target.
FUZZ_SECONDS ?= 20
FUZZ_B = build-fuzz
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES = $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_SAN = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

fuzzers: $(FUZZ_NAMES:%=$(B)/fuzz/%)

$(B)/fuzz/%: $(B)/obj/tests/fuzz/%.o $(DAEMON_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(XLDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_D)

fuzz: deps
	$(MAKE) B=$(FUZZ_B) CC=clang OPT=-O1 SAN="$(FUZZ_SAN)" fuzzers
	@pass=0; fail=0; for f in $(FUZZ_NAMES); do \
		mkdir -p $(FUZZ_B)/corpus/$$f $(FUZZ_B)/crashes/$$f; \
		echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
		if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
			$(FUZZ_B)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=65536 \
			-artifact_prefix=$(FUZZ_B)/crashes/$$f/ $(FUZZ_B)/corpus/$$f tests/fuzz/corpus/$$f \
			> $(FUZZ_B)/$$f.log 2>&1; then \
			pass=$$((pass+1)); grep -E "stat::number_of_executed_units|cov:" $(FUZZ_B)/$$f.log | tail -2; \
		else fail=$$((fail+1)); tail -40 $(FUZZ_B)/$$f.log; fi; \
	done; echo "fuzz harnesses: $$pass passed, $$fail failed"; [ $$fail = 0 ]

# Runs ferryd in the foreground on ./run/ferry.sock, with a throwaway
# redis-server in ./run/ unless FERRY_REDIS_URL names another Redis, and a
# throwaway RabbitMQ node in ./run/rabbitmq unless FERRY_AMQP_URL names a
# broker. Whatever it started, it stops on the way out: Ctrl-C reaches
# ferryd, which drains; the shell waits for it (trap :), then cleans up.
run: deps all
	@mkdir -p run; rm -f run/ferry.sock; started=""; \
	cleanup() { \
		case "$$started" in *redis*) kill $$(cat $(CURDIR)/run/redis.pid) 2>/dev/null;; esac; \
		case "$$started" in *rabbitmq*) echo "make run: stopping RabbitMQ"; \
			tests/throwaway-rabbitmq.sh stop $(CURDIR)/run/rabbitmq;; esac; \
	}; \
	trap cleanup EXIT; trap : INT TERM; \
	if [ -z "$$FERRY_REDIS_URL" ]; then \
		redis-server --port 0 --unixsocket $(CURDIR)/run/redis.sock --save '' --appendonly no \
			--dir $(CURDIR)/run --logfile $(CURDIR)/run/redis.log \
			--daemonize yes --pidfile $(CURDIR)/run/redis.pid || exit 1; \
		started="$$started redis"; \
		FERRY_REDIS_URL=unix://$(CURDIR)/run/redis.sock; export FERRY_REDIS_URL; \
	fi; \
	if [ -z "$$FERRY_AMQP_URL" ]; then \
		echo "make run: starting a throwaway RabbitMQ in ./run/rabbitmq (takes a few seconds;" \
			"set FERRY_AMQP_URL to use your own broker)"; \
		started="$$started rabbitmq"; \
		FERRY_AMQP_URL=$$(tests/throwaway-rabbitmq.sh start $(CURDIR)/run/rabbitmq) || exit 1; \
	fi; \
	echo "ferryd: Redis at $$FERRY_REDIS_URL, RabbitMQ at $$FERRY_AMQP_URL; socket ./run/ferry.sock." \
		"Ctrl-C drains and stops."; \
	echo "In another shell:"; \
	echo "  export PATH=$(abspath $(B)):\$$PATH FERRY_SOCKET=$(CURDIR)/run/ferry.sock"; \
	echo "  ferry ping"; \
	OTEL_TRACES_EXPORTER=$${OTEL_TRACES_EXPORTER:-console} OTEL_METRICS_EXPORTER=$${OTEL_METRICS_EXPORTER:-none} \
		$(B)/ferryd --socket run/ferry.sock --amqp "$$FERRY_AMQP_URL" $(RUN_ARGS)

bench: deps all
	/usr/bin/python3 tests/bench/run_bench.py --build $(abspath $(B)) $(BENCH_ARGS)

# Where `make install` puts things. Each may be set on the command line;
# DESTDIR stages the whole tree elsewhere (packaging, tests).
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
SBINDIR      ?= $(PREFIX)/sbin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
SYSCONFDIR   ?= /etc
DATADIR      ?= $(PREFIX)/share
MANDIR       ?= $(DATADIR)/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# Debian's python3 looks in /usr/lib/python3/dist-packages for packages of
# the system, and in /usr/local/lib/python3.X/dist-packages for local ones
# (there is no /usr/local/lib/python3/dist-packages on its sys.path).
PYVER        := $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)
PYTHONDIR    ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYVER)/dist-packages)
VERSION      := $(shell sed -n 's/^\#define FERRY_VERSION "\(.*\)"/\1/p' daemon/base/config.h)

MAN_GEN = $(B)/man/ferryd.conf.5

# ferryd.conf(5)'s list of keys comes from the daemon's own table, as
# conf/ferryd.conf does, so the page cannot drift from the code.
$(B)/man/ferryd.conf.5: man/ferryd.conf.5.in man/conf2man.awk $(B)/ferryd
	@mkdir -p $(dir $@)
	$(B)/ferryd --print-config | awk -f man/conf2man.awk > $@.keys
	sed -e '/^@KEYS@$$/{r $@.keys' -e 'd}' man/ferryd.conf.5.in > $@
	@rm -f $@.keys

man: $(MAN_GEN)
all: $(MAN_GEN)

# The files install puts, relative to DESTDIR, for uninstall (the config
# file is handled on its own: an edited one is kept).
INSTALLED = $(SBINDIR)/ferryd $(BINDIR)/ferry $(LIBDIR)/libferry.a $(LIBDIR)/libferry.so.1 \
	$(LIBDIR)/libferry.so $(INCLUDEDIR)/ferry.h $(PKGCONFIGDIR)/ferry.pc \
	$(PYTHONDIR)/ferry.py $(MANDIR)/man8/ferryd.8 $(MANDIR)/man1/ferry.1 \
	$(MANDIR)/man5/ferryd.conf.5 $(MANDIR)/man7/ferry-protocol.7 \
	$(SYSCONFDIR)/ferry/ferryd.conf.default \
	$(SYSTEMDUNITDIR)/ferryd.service $(SYSTEMDUNITDIR)/ferryd.socket $(SYSUSERSDIR)/ferry.conf

# The library as ldconfig expects it: the file under its soname, and the
# unversioned link for linking; ldconfig runs only for a real install.
# conf/ferryd.conf goes in as ferryd.conf only when there is none: an
# existing one may have been edited. ferryd.conf.default is always this
# version's, to compare against.
install: all $(MAN_GEN) install-systemd
	install -D -m 0755 $(B)/ferryd $(DESTDIR)$(SBINDIR)/ferryd
	install -D -m 0755 $(B)/ferry $(DESTDIR)$(BINDIR)/ferry
	install -D -m 0644 $(B)/libferry.a $(DESTDIR)$(LIBDIR)/libferry.a
	install -D -m 0755 $(B)/libferry.so.1 $(DESTDIR)$(LIBDIR)/libferry.so.1
	ln -sf libferry.so.1 $(DESTDIR)$(LIBDIR)/libferry.so
	install -D -m 0644 client-stub/c/ferry.h $(DESTDIR)$(INCLUDEDIR)/ferry.h
	@mkdir -p $(DESTDIR)$(PKGCONFIGDIR)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' client-stub/c/ferry.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/ferry.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/ferry.pc
	install -D -m 0644 client-stub/python/ferry.py $(DESTDIR)$(PYTHONDIR)/ferry.py
	install -D -m 0644 man/ferryd.8 $(DESTDIR)$(MANDIR)/man8/ferryd.8
	install -D -m 0644 man/ferry.1 $(DESTDIR)$(MANDIR)/man1/ferry.1
	install -D -m 0644 $(B)/man/ferryd.conf.5 $(DESTDIR)$(MANDIR)/man5/ferryd.conf.5
	install -D -m 0644 man/ferry-protocol.7 $(DESTDIR)$(MANDIR)/man7/ferry-protocol.7
	install -D -m 0644 conf/ferryd.conf $(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf.default
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf (this version's is ferryd.conf.default)"; \
	else \
		echo "install -m 0644 conf/ferryd.conf $(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf"; \
		install -m 0644 conf/ferryd.conf $(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf; \
	fi
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then ldconfig; fi

# Removes what install put. ferryd.conf goes only when it is still the one
# install wrote (equal to ferryd.conf.default); an edited one stays.
uninstall:
	@conf=$(DESTDIR)$(SYSCONFDIR)/ferry/ferryd.conf; \
	if [ -e $$conf ] && cmp -s $$conf $$conf.default; then \
		echo "rm -f $$conf"; rm -f $$conf; \
	elif [ -e $$conf ]; then echo "keeping $$conf: it was edited"; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now ferryd.socket ferryd.service 2>/dev/null || true; fi
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(SYSCONFDIR)/ferry $(DESTDIR)$(PKGCONFIGDIR) 2>/dev/null
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then ldconfig; fi

# The systemd units (systemd/), with ExecStart= at the installed ferryd, and
# the ferry user and group they run as (sysusers.d).
# `install` depends on it; alone, it installs only these.
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
