# meterd — build, run, test.  `make help` lists the targets.
# A sanitizer build goes to build/asan:  make SAN=1 ...
SHELL   := /bin/bash
CC      ?= cc
PKGS    := libmicrohttpd jansson libprotobuf-c sqlite3 zlib librabbitmq hiredis libpq grpc
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

ifeq ($(SAN),1)
BUILD   ?= build/asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
else
BUILD   ?= build
SANFLAGS :=
OPT     := -O2 -g
endif

GEN      := $(BUILD)/gen
CPPFLAGS += -D_GNU_SOURCE -DMETERD_VERSION='"$(VERSION)"' -Isrc -I$(GEN) $(shell pkg-config --cflags $(PKGS))
CFLAGS   += -std=c17 $(OPT) -Wall -Wextra -Werror -pthread -MMD -MP $(SANFLAGS)
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -lm -pthread
LDFLAGS  += $(SANFLAGS)

PROTOS   := proto/meterd/v1/batch.proto proto/meterdata.proto proto/meterusage.proto \
            proto/meterd/v1/meterd.proto proto/grpc/health/v1/health.proto
PB_SRCS  := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.c) $(GEN)/google/protobuf/timestamp.pb-c.c
SRCS     := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
OBJS     := $(SRCS:%.c=$(BUILD)/%.o) $(PB_SRCS:%.c=%.o) $(GEN)/web_assets.o
BIN      := $(BUILD)/meterd
UNIT_SRCS := $(shell find tests/unit -name 'test_*.c' 2>/dev/null | sort)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
PYTEST   := /usr/bin/python3 -m pytest

.PHONY: all deps run test test-unit test-integration test-distributed test-servers test-asan fuzz bench bench-smoke clean help format
all: $(BIN)

help:
	@echo "make run        install deps, build, start 'meterd serve' on :8080 (data in ./data)"
	@echo "make test       unit + integration tests, then again under ASan+UBSan"
	@echo "make test-unit  cmocka unit tests only"
	@echo "make test-distributed  api/worker on real RabbitMQ, Redis, PostgreSQL (~7 min)"
	@echo "make fuzz       run every libFuzzer target for FUZZ_SECONDS (default 30);"
	@echo "                FUZZ_TARGETS=\"grpc_messages ...\" runs only those"
	@echo "make bench      benchmarks, results in docs/benchmarks.md"
	@echo "make bench-smoke  loadgen --verify against a fresh meterd (seconds)"

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) serve --data-dir ./data

# Generated protobuf-c code lives in the build tree, never in git.
$(GEN)/.stamp: $(PROTOS)
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto -I/usr/include $(PROTOS) google/protobuf/timestamp.proto
	@touch $@
$(PB_SRCS): $(GEN)/.stamp ;

# Web assets (dashboard, Swagger UI, uPlot, the OpenAPI spec) embedded as one generated C file.
# uPlot and swagger-ui-dist come from npm (package-lock.json) into node_modules/, never into git;
# `npm ci` runs here only when a file is missing, so builds are offline once it has run.
NODE_VENDOR := node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
               node_modules/uplot/LICENSE node_modules/swagger-ui-dist/swagger-ui-bundle.js \
               node_modules/swagger-ui-dist/swagger-ui.css node_modules/swagger-ui-dist/LICENSE
WEB_FILES   := web/index.html web/app.js web/style.css web/swagger.html web/swagger-init.js \
               docs/api/openapi.yaml $(NODE_VENDOR)
WEB_NAMES   := index.html=web/index.html app.js=web/app.js style.css=web/style.css \
               swagger.html=web/swagger.html swagger-init.js=web/swagger-init.js \
               openapi.yaml=docs/api/openapi.yaml \
               uPlot.iife.min.js=node_modules/uplot/dist/uPlot.iife.min.js \
               uPlot.min.css=node_modules/uplot/dist/uPlot.min.css \
               uPlot.LICENSE.txt=node_modules/uplot/LICENSE \
               swagger-ui-bundle.js=node_modules/swagger-ui-dist/swagger-ui-bundle.js \
               swagger-ui.css=node_modules/swagger-ui-dist/swagger-ui.css \
               swagger-ui.LICENSE.txt=node_modules/swagger-ui-dist/LICENSE
$(NODE_VENDOR) &:
	npm ci --ignore-scripts --no-audit --no-fund
$(GEN)/web_assets.c: $(WEB_FILES) scripts/embed_assets.py
	@mkdir -p $(@D)
	/usr/bin/python3 scripts/embed_assets.py $@ $(WEB_NAMES)

$(BUILD)/src/%.o: src/%.c $(GEN)/.stamp
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(GEN)/%.o: $(GEN)/%.c
	$(CC) $(CPPFLAGS) $(filter-out -Werror,$(CFLAGS)) -c $< -o $@

$(BUILD)/libmeterd.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/src/main.o $(BUILD)/libmeterd.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmeterd.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests/unit $< $(BUILD)/libmeterd.a $(LDFLAGS) $(LDLIBS) -lcmocka -o $@

test-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

test-integration: $(BIN)
	METERD_BIN=$(abspath $(BIN)) $(PYTEST) -q tests/integration

# Everything once normally, then once under AddressSanitizer + UBSan.
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory test-unit test-integration bench-smoke test-servers
	@$(MAKE) --no-print-directory SAN=1 test-unit test-integration

# api + worker against real RabbitMQ, Redis and PostgreSQL (started by the tests): gateway
# envelopes, events, dead letters, 2 api + 3 workers storing 200k readings exactly once, and
# the api's backlog budget and live events on both brokers.
test-servers: $(BIN)
	METERD_BIN=$(abspath $(BIN)) METERD_TEST_SERVERS=1 $(PYTEST) -q \
	    tests/integration/test_30_distributed_amqp_pg.py tests/integration/test_32_scale_out.py \
	    tests/integration/test_34_distributed_api.py

# Distributed mode against real PostgreSQL, RabbitMQ and Redis started by the tests (~7 min):
# the embedded suite again on amqp+pg and redis+pg, then the scale-out and fault tests.
test-distributed: $(BIN)
	METERD_BIN=$(abspath $(BIN)) METERD_TEST_BACKEND=amqp+pg $(PYTEST) -q tests/integration
	METERD_BIN=$(abspath $(BIN)) METERD_TEST_BACKEND=redis+pg $(PYTEST) -q tests/integration
	METERD_BIN=$(abspath $(BIN)) METERD_TEST_SERVERS=1 $(PYTEST) -q tests/integration/test_3*.py

FUZZ_SECONDS ?= 30
fuzz:
	@$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk FUZZ_SECONDS=$(FUZZ_SECONDS) run

bench: all
	bench/run.sh

# A few seconds: meterd loadgen --verify against a fresh meterd (called by make test).
bench-smoke: $(BIN)
	METERD_BIN=$(abspath $(BIN)) bench/smoke.sh

format:
	clang-format -i $$(find src tests -name '*.[ch]')

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
