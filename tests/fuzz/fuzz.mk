# libFuzzer targets: one per parser, tests/fuzz/fuzz_<name>.c, seeds in tests/fuzz/corpus/<name>/.
#   make -f tests/fuzz/fuzz.mk [FUZZ_SECONDS=30] run     build and run every target
#   make -f tests/fuzz/fuzz.mk build/fuzz/fuzz_<name>    build one target
#   make fuzz FUZZ_TARGETS="grpc_messages csv"          run only these (names without fuzz_)
#   FUZZ_BUILD=build/somewhere                           another build directory
# Every fuzz_*.c is picked up automatically. Runs work on a copy of the seed corpus, so
# new inputs never land in the repository; crashes are kept in $(FUZZ_BUILD)/artifacts/.
SHELL        := /bin/bash
FUZZ_SECONDS ?= 30
FUZZ_BUILD   ?= build/fuzz
FCC          := clang
PKGS         := libmicrohttpd jansson libprotobuf-c sqlite3 zlib librabbitmq hiredis libpq grpc
VERSION      := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

GEN       := $(FUZZ_BUILD)/gen
PROTOS    := proto/meterd/v1/batch.proto proto/meterdata.proto proto/meterusage.proto \
             proto/meterd/v1/meterd.proto proto/grpc/health/v1/health.proto
PB_SRCS   := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.c) $(GEN)/google/protobuf/timestamp.pb-c.c
SRCS      := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
OBJS      := $(SRCS:%.c=$(FUZZ_BUILD)/obj/%.o) $(PB_SRCS:$(GEN)/%.c=$(FUZZ_BUILD)/obj/gen/%.o)
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
TARGETS   := $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%)
FUZZ_TARGETS ?= $(TARGETS)
BINS      := $(TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
RUN_BINS  := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

CPPFLAGS  := -D_GNU_SOURCE -DMETERD_VERSION='"$(VERSION)"' -Isrc -I$(GEN) \
             $(shell pkg-config --cflags $(PKGS))
SAN       := address,undefined
CFLAGS    := -std=c17 -g -O1 -Wall -Wextra -Werror -pthread -MMD -MP -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
LDLIBS    := $(shell pkg-config --libs $(PKGS)) -lm -pthread

.PHONY: all run clean
all: $(BINS)

# Same protoc-c invocation as the main Makefile, into the fuzz build tree.
$(GEN)/.stamp: $(PROTOS)
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto -I/usr/include $(PROTOS) google/protobuf/timestamp.proto
	@touch $@
$(PB_SRCS): $(GEN)/.stamp ;

$(FUZZ_BUILD)/obj/src/%.o: src/%.c $(GEN)/.stamp
	@mkdir -p $(@D)
	$(FCC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer-no-link,$(SAN) -c $< -o $@
$(FUZZ_BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(@D)
	$(FCC) $(CPPFLAGS) $(filter-out -Werror,$(CFLAGS)) -fsanitize=fuzzer-no-link,$(SAN) -c $< -o $@

$(FUZZ_BUILD)/libmeterd-fuzz.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libmeterd-fuzz.a
	$(FCC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer,$(SAN) $< $(FUZZ_BUILD)/libmeterd-fuzz.a \
		$(LDLIBS) -o $@

# Runs every target even when one fails, then fails if any did (crash, leak, timeout, UB).
run: $(RUN_BINS)
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
		work=$(FUZZ_BUILD)/work/$$t; art=$(FUZZ_BUILD)/artifacts/$$t; \
		rm -rf $$work; mkdir -p $$work $$art; \
		if [ -d tests/fuzz/corpus/$$t ]; then cp -R tests/fuzz/corpus/$$t/. $$work/; fi; \
		dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
		echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
		if ! $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-print_final_stats=1 -artifact_prefix=$$art/ $$dict $$work \
			> $(FUZZ_BUILD)/fuzz_$$t.log 2>&1; then \
			failed="$$failed $$t"; tail -n 60 $(FUZZ_BUILD)/fuzz_$$t.log; \
		fi; \
		grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
			$(FUZZ_BUILD)/fuzz_$$t.log || true; \
	done; \
	if [ -n "$$failed" ]; then echo "FUZZ FAILED:$$failed (inputs in $(FUZZ_BUILD)/artifacts/)"; exit 1; fi; \
	echo "fuzz: all targets passed"

clean:
	rm -rf $(FUZZ_BUILD)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
