# The benchmark of issue 4; included by the main Makefile. CI does not run it.
#   make bench [BENCH_SECONDS=10] [BENCH_ROUNDS=3] [BENCH_ONLY=c1,c64,...]
#                      installs missing tools (tests/bench/deps.sh), builds
#                      build/pinmeter with -O2 and the bench tools, runs
#                      tests/bench/bench.py, prints one table
#   make bench-tools   builds build-bench/mockup and build-bench/streamload
#   make bench-clean   drops build-bench/ (tools, cached 10M-row ledger, results)
# See tests/bench/README.md for the scenarios and what each figure means.

BENCH_OUT    := build-bench
BENCH_CC     ?= $(CC)
BENCH_CFLAGS := -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
BENCH_TOOLS  := $(BENCH_OUT)/mockup $(BENCH_OUT)/streamload

.PHONY: bench bench-tools bench-deps bench-clean

$(BENCH_OUT)/mockup: tests/bench/mockup.c
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $< -lpthread

$(BENCH_OUT)/streamload: tests/bench/streamload.c
	@mkdir -p $(@D)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $<

bench-tools: $(BENCH_TOOLS)

bench-deps:
	@./scripts/deps.sh
	@./tests/bench/deps.sh

bench: bench-deps
	@$(MAKE) --no-print-directory BUILD=build CFLAGS="-O2 -g" all bench-tools
	BENCH_NO_BUILD=1 python3 tests/bench/bench.py

bench-clean:
	rm -rf $(BENCH_OUT)
