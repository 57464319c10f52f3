# pinmeter — metering proxy for Pinata Inference.
# Entry points: make (build/pinmeter), make run, make test, make asan, make tsan,
# make clean.

CC      ?= cc
PKGS    := libmicrohttpd libcurl libcjson sqlite3 openssl hiredis
CFLAGS  ?= -O2 -g
# -MMD: no header in include/ may share a name with a system header (a
# project limits.h was reached by the system's <limits.h> through -Iinclude,
# its includes counted as system headers and the .d files missed them).
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -MMD -MP $(EXTRA_CFLAGS)
override LDLIBS += -lmicrohttpd -lcurl -lcjson -lsqlite3 -lhiredis -lssl -lcrypto -lpthread -lm
BUILD   ?= build

SRC       := $(wildcard src/*.c)
LUA       := $(filter-out src/lua/prelude.lua,$(wildcard src/lua/*.lua))
WEB       := $(sort $(wildcard src/web/*.html src/web/*.css src/web/*.js src/web/*.svg))
OBJ       := $(SRC:src/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/lua_scripts.o $(BUILD)/obj/web_assets.o
LIBOBJ    := $(filter-out $(BUILD)/obj/main.o,$(OBJ))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run demo test test-deps unit e2e asan tsan valgrind ledger-bench clean deps FORCE

all: $(BUILD)/pinmeter

$(BUILD)/pinmeter: $(OBJ)
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The Redis budget scripts, compiled in as C strings (src/lua/README).
$(BUILD)/gen/lua_scripts.c: src/lua/prelude.lua $(LUA) scripts/lua2c.sh
	@mkdir -p $(dir $@)
	@echo "  GEN   $@"
	@./scripts/lua2c.sh src/lua/prelude.lua $(LUA) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/lua_scripts.o: $(BUILD)/gen/lua_scripts.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

# The dashboard's page, stylesheet, scripts and icon, compiled in as byte
# arrays (include/web.h).
$(BUILD)/gen/web_assets.c: $(WEB) scripts/web2c.sh
	@mkdir -p $(dir $@)
	@echo "  GEN   $@"
	@./scripts/web2c.sh $(WEB) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/web_assets.o: $(BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIBOBJ)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS)

# The same program with test-only fault hooks (PINMETER_TEST_LEDGER_FAULT,
# PINMETER_TEST_ALERT_*); the e2e fault and alert tests use it. Never shipped.
ifneq ($(BUILD),build-test)
build-test/pinmeter: FORCE
	@$(MAKE) --no-print-directory BUILD=build-test EXTRA_CFLAGS=-DPINMETER_TEST_HOOKS build-test/pinmeter
endif

# Installs missing build dependencies (Debian), builds, starts with the default config.
deps:
	@./scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	./$(BUILD)/pinmeter serve -c conf/pinmeter.json

# The dashboard with nothing to set up: the mock Pinata, pinmeter with three
# example teams and a trickle of traffic on loopback (scripts/demo.py).
# Prints the dashboard's URL and the admin token; Ctrl-C stops it all.
demo: deps
	@$(MAKE) --no-print-directory all
	@python3 scripts/demo.py --bin $(BUILD)/pinmeter

unit: $(UNIT_BIN)
	@fail=0; for h in include/*.h; do b=$${h#include/}; \
	  if [ -e /usr/include/$$b ] || [ -e /usr/include/x86_64-linux-gnu/$$b ]; then \
	    echo "$$h shadows the system's <$$b>: rename it"; fail=1; fi; done; \
	  for t in $(UNIT_BIN); do $$t || fail=1; done; exit $$fail

# The e2e files run in E2E_JOBS processes at once: the tests mostly wait
# (upstream delays, leases, rate windows), so three fit on two cores.
E2E_JOBS ?= 3
e2e: $(BUILD)/pinmeter build-test/pinmeter
	python3 tests/e2e/run.py --bin $(BUILD)/pinmeter -j $(E2E_JOBS)

# What make test needs beyond the build (installed when missing, as make run
# does): clang for the fuzz regressions, redis-server for the shared-budget
# tests, sqlite3, prometheus (its server and promtool) for the metrics test,
# chromium for the dashboard's browser test, nginx (any of Debian's nginx
# packages; nginx-light when none is there) and openssl for the TLS/HTTP/2
# upstream test; the openai SDK for the client test and puppeteer-core (which
# drives Debian's chromium; it downloads no browser) when npm is there.
TEST_PKGS := clang redis-server redis-tools sqlite3 prometheus chromium openssl \
             $(if $(shell command -v nginx),,nginx-light)
test-deps: deps
	@./scripts/deps.sh $(TEST_PKGS)
	@if command -v npm >/dev/null && [ ! -d tests/client/node_modules/openai ]; then \
	  (cd tests/client && npm ci --no-audit --no-fund --loglevel=error) || \
	  echo "  (npm ci failed: the openai client test will be skipped)"; fi
	@if command -v npm >/dev/null && [ ! -d tests/browser/node_modules/puppeteer-core ]; then \
	  (cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) || \
	  echo "  (npm ci failed: the dashboard's browser test will be skipped)"; fi

test: test-deps
	@$(MAKE) --no-print-directory all unit fuzz-regress e2e

# Ledger throughput through the writer thread (part of make bench).
$(BUILD)/perf/%: tests/perf/%.c $(LIBOBJ)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS)

ledger-bench: $(BUILD)/perf/ledger_bench
	$(BUILD)/perf/ledger_bench 200000 4

# The core end-to-end tests with pinmeter under valgrind memcheck: any memory
# error or definite leak makes pinmeter exit 99 at stop, which fails the test.
VALGRIND_TESTS ?= -k test_metering -k test_errors -k test_account -k test_restart -k test_faults_upstream \
                  -k StoreDownClosed -k StoreRestart -k FleetKill -k StoreStall
valgrind: $(BUILD)/pinmeter
	PINMETER_E2E_WRAPPER="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet" \
	  python3 tests/e2e/run.py --bin $(BUILD)/pinmeter $(VALGRIND_TESTS)

asan:
	$(MAKE) BUILD=build-asan CC=clang CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" E2E_JOBS=2 test

# The whole end-to-end suite with pinmeter under ThreadSanitizer (the event
# loop, the ledger writer and the Redis store's threads share requests). Every
# report (data race, lock-order inversion) goes to a file under
# build-tsan/reports; any such file fails the target.
# One e2e file at a time: ThreadSanitizer makes pinmeter several times slower,
# and the timing of a few tests (alert delivery around a SIGKILL) with it.
TSAN_E2E_JOBS ?= 1
tsan:
	@rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	TSAN_OPTIONS="log_path=$(CURDIR)/build-tsan/reports/tsan second_deadlock_stack=1" \
	  $(MAKE) BUILD=build-tsan CC=clang CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer" E2E_JOBS=$(TSAN_E2E_JOBS) e2e
	@if ls build-tsan/reports/tsan.* >/dev/null 2>&1; then \
	  echo "tsan: ThreadSanitizer reported (build-tsan/reports):"; head -60 build-tsan/reports/tsan.*; exit 1; \
	else echo "tsan: no reports"; fi

clean:
	rm -rf build build-asan build-tsan build-test build-fuzz

include tests/fuzz/fuzz.mk
include tests/bench/bench.mk
-include $(OBJ:.o=.d) $(UNIT_BIN:=.d)
