# ZQ build. `make` builds the library, the `zq` program and the default model; `make run` chats
# with it; `make test` runs every test. Switches (?= with safe defaults) become ZQ_USE_* defines.

OPENMP   ?= 1
DNNL     ?= 1
SANITIZE ?= 0
DEBUG    ?= 0
BUILD    ?= build
CC       ?= gcc

ifeq ($(filter $(OPENMP),0 1),)
$(error OPENMP must be 0 or 1, got '$(OPENMP)')
endif
ifeq ($(filter $(DNNL),0 1),)
$(error DNNL must be 0 or 1, got '$(DNNL)')
endif
ifeq ($(filter $(SANITIZE),0 1),)
$(error SANITIZE must be 0 or 1, got '$(SANITIZE)')
endif
ifeq ($(filter $(DEBUG),0 1),)
$(error DEBUG must be 0 or 1, got '$(DEBUG)')
endif
ifeq ($(strip $(BUILD)),)
$(error BUILD must name a folder, got an empty value)
endif

ARCH := $(shell uname -m)

CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -MMD -MP -fPIC
LDLIBS  := -lzstd -lcjson -lzip -lutf8proc -lmicrohttpd -lhiredis -lm -lpthread
ifeq ($(DEBUG),1)
CFLAGS  += -O0 -g
else
CFLAGS  += -O2 -g
endif
ifeq ($(OPENMP),1)
CFLAGS  += -fopenmp -DZQ_USE_OPENMP=1
LDLIBS  += -fopenmp
else
# Without OpenMP the parallel loops run serially by design, so their pragmas are expected.
CFLAGS  += -Wno-unknown-pragmas
endif
ifeq ($(DNNL),1)
CFLAGS  += -DZQ_USE_DNNL=1
LDLIBS  += -ldnnl
endif
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS  += -fsanitize=address,undefined
endif

# Kernel variants are compiled with their own instruction-set flags and chosen at run time.
ifeq ($(ARCH),x86_64)
SIMD_SKIP := %_neon.c
FLAGS_avx2   := -mavx2 -mfma -mf16c
FLAGS_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx2 -mfma -mf16c
else ifeq ($(ARCH),aarch64)
SIMD_SKIP := %_avx2.c %_avx512.c
FLAGS_neon := -march=armv8.2-a+dotprod+fp16
else
SIMD_SKIP := %_avx2.c %_avx512.c %_neon.c
endif

LIB_SRC  := $(filter-out $(SIMD_SKIP),$(wildcard runtime/*.c formats/*.c quantize/*.c))
CLI_SRC  := $(wildcard cli/*.c server/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_LIB := $(wildcard tests/support/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_LIB:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

DEFAULT_MODEL := $(BUILD)/zh-chat-tiny.zq
DEPS_STAMP    := $(BUILD)/.deps-ok
# The compiler command line of this build; objects rebuild when a switch changes it.
FLAGS_STAMP   := $(BUILD)/.flags
FLAGS_TEXT    := $(CC) $(CFLAGS) $(LDLIBS)

.PHONY: all deps run test bench clean lib format FORCE
# Keep test objects, which make would otherwise delete as intermediate files.
.SECONDARY:
all: $(BUILD)/zq $(BUILD)/libzq.a $(BUILD)/libzq.so $(DEFAULT_MODEL) $(TEST_BIN)

# The package check runs once per build folder; delete the stamp (or `make deps`) to rerun it.
deps:
	@scripts/setup-deps.sh
$(DEPS_STAMP):
	@scripts/setup-deps.sh
	@mkdir -p $(BUILD) && touch $@

$(FLAGS_STAMP): FORCE | $(DEPS_STAMP)
	@echo '$(FLAGS_TEXT)' | cmp -s - $@ || { echo '$(FLAGS_TEXT)' >$@; \
	  echo "zq build: arch=$(ARCH) OPENMP=$(OPENMP) DNNL=$(DNNL) SANITIZE=$(SANITIZE)" \
	       "DEBUG=$(DEBUG) -> $(BUILD)/"; }

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FLAGS_$(lastword $(subst _, ,$(basename $(notdir $<))))) -c $< -o $@

$(BUILD)/libzq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libzq.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/zq: $(CLI_OBJ) $(BUILD)/libzq.a
	$(CC) -o $@ $(CLI_OBJ) $(BUILD)/libzq.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_OBJ) $(BUILD)/libzq.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $< $(TEST_OBJ) $(BUILD)/libzq.a $(LDLIBS)

$(DEFAULT_MODEL): $(BUILD)/zq models/zh-chat-tiny/model.safetensors
	$(BUILD)/zq quantize models/zh-chat-tiny -o $@ --type int8

run: all
	$(BUILD)/zq run -p "你好，你是谁？" --seed 1
	@echo "--- zq chat: type a message and press Enter; /reset clears the history, Ctrl-D quits" >&2
	$(BUILD)/zq chat

test: all
	@scripts/setup-deps.sh --test-tools
	@BUILD=$(BUILD) scripts/run-tests.sh

bench: all
	@scripts/setup-deps.sh --bench
	@BUILD=$(BUILD) bench/run.sh

format:
	clang-format -i runtime/*.[ch] formats/*.[ch] quantize/*.[ch] cli/*.[ch] tests/*.[ch]

clean:
	rm -rf $(BUILD) build-san

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(TEST_SRC:%.c=$(BUILD)/obj/%.d)
