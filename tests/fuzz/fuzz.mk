# libFuzzer targets for the pure parsers; included by the main Makefile.
#   make fuzz [FUZZ_SECONDS=60]   build, then fuzz each target for FUZZ_SECONDS
#                                 (make -k fuzz runs all even after a crash;
#                                 make -j2 fuzz runs two at a time)
#   make fuzz-<name>              one target: sse, usage, admit, config
#   make fuzz-regress             run every seed and regression input once (fast)
#   make fuzz-clean               drop build-fuzz/ (binaries, grown corpora, crashes)
# Each target links only the pure modules it needs. Fuzzing runs on a copy of
# the seeds in build-fuzz/corpus-<name>, kept between runs so later runs start
# from what earlier ones found; crashes land in build-fuzz/crashes-<name>/.
# See tests/fuzz/README.md for the input formats and how to keep a crash.

FUZZ_SECONDS ?= 10
FUZZ_CC      ?= clang
FUZZ_OUT     := build-fuzz
FUZZ_TARGETS := sse usage admit config
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -Wall -Wextra -Werror \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_LIBS    := -lcjson -lm
FUZZ_FLAGS   := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_OUT)/fuzz_%)
FUZZ_DEPS    := tests/fuzz/fuzz.h $(wildcard include/*.h)
FUZZ_LINK     = @mkdir -p $(@D) && echo "  FUZZCC $@" && \
                $(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(FUZZ_LIBS)

.PHONY: fuzz fuzz-regress fuzz-clean $(FUZZ_TARGETS:%=fuzz-%)

$(FUZZ_OUT)/fuzz_sse: tests/fuzz/fuzz_sse.c src/sse.c $(FUZZ_DEPS)
	$(FUZZ_LINK)
$(FUZZ_OUT)/fuzz_usage: tests/fuzz/fuzz_usage.c tests/fuzz/usage_ref.c src/usage.c src/jscan.c \
                        src/rates.c tests/fuzz/usage_ref.h $(FUZZ_DEPS)
	$(FUZZ_LINK)
$(FUZZ_OUT)/fuzz_admit: tests/fuzz/fuzz_admit.c tests/fuzz/admit_ref.c src/admit.c src/admit_scan.c src/jscan.c \
                        src/admit_int.h tests/fuzz/admit_ref.h $(FUZZ_DEPS)
	$(FUZZ_LINK)
$(FUZZ_OUT)/fuzz_config: tests/fuzz/fuzz_config.c src/config.c src/config_team.c src/config_alerts.c \
                         src/cfgrow.c src/rates.c src/money.c src/config_int.h $(FUZZ_DEPS)
	$(FUZZ_LINK)

fuzz: $(FUZZ_TARGETS:%=fuzz-%)

# One target for FUZZ_SECONDS; on a crash prints the report and fails. The sse
# input starts with a control header, so it has its own dictionary.
$(FUZZ_TARGETS:%=fuzz-%): fuzz-%: $(FUZZ_OUT)/fuzz_%
	@mkdir -p $(FUZZ_OUT)/corpus-$* $(FUZZ_OUT)/crashes-$*
	@cp -R tests/fuzz/corpus/$*/. $(FUZZ_OUT)/corpus-$*/
	@if [ -d tests/fuzz/regress/$* ]; then cp -R tests/fuzz/regress/$*/. $(FUZZ_OUT)/corpus-$*/; fi
	@echo "  FUZZ   $* for $(FUZZ_SECONDS) s (log: $(FUZZ_OUT)/fuzz_$*.log)"
	@dict=tests/fuzz/$(if $(filter sse,$*),sse,json).dict; \
	if $(FUZZ_OUT)/fuzz_$* $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	    -dict=$$dict -artifact_prefix=$(FUZZ_OUT)/crashes-$*/ \
	    $(FUZZ_OUT)/corpus-$* >$(FUZZ_OUT)/fuzz_$*.log 2>&1; then \
	  grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_OUT)/fuzz_$*.log | sed 's/^/         /'; \
	else \
	  tail -n 60 $(FUZZ_OUT)/fuzz_$*.log; \
	  echo "fuzz-$*: FAILED; crash input in $(FUZZ_OUT)/crashes-$*/ (see tests/fuzz/README.md)"; \
	  exit 1; \
	fi

# Every seed and every kept crash, once each, through all targets: a few
# seconds, meant for make test. An input that aborts fails the run.
fuzz-regress: $(FUZZ_BINS)
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  files=$$(find tests/fuzz/corpus/$$t tests/fuzz/regress/$$t -type f 2>/dev/null | sort); \
	  [ -n "$$files" ] || continue; \
	  n=$$(echo "$$files" | wc -l); \
	  if $(FUZZ_OUT)/fuzz_$$t $$files >$(FUZZ_OUT)/regress_$$t.log 2>&1; then \
	    echo "  fuzz-regress $$t: $$n inputs ok"; \
	  else \
	    tail -n 60 $(FUZZ_OUT)/regress_$$t.log; \
	    echo "  fuzz-regress $$t: FAILED (log: $(FUZZ_OUT)/regress_$$t.log)"; fail=1; \
	  fi; \
	done; exit $$fail

fuzz-clean:
	rm -rf $(FUZZ_OUT)
