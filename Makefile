# npc_scale — PostgreSQL 15 extension in C++ (PGXS).
#
#   make && make install     the extension
#   make unit                GoogleTest binary build/unit_tests (src/core + fake GPU logic)
#   make fake_gpu            the simulated vLLM server, build/fake_gpu
#   make npc_load            the game-server load generator, build/npc_load
#   test/run                 everything, end to end (see README.md)

EXTENSION = npc_scale
MODULE_big = npc_scale
DATA = sql/npc_scale--0.1.0.sql

CORE_SRCS := $(wildcard src/core/*.cpp)
PG_SRCS := $(wildcard src/pg/*.cpp)
OBJS = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PG_INCLUDE_SERVER := $(shell $(PG_CONFIG) --includedir-server)

# Postgres's headers as system headers: PG 15's own warnings (e.g. `register`
# in s_lock.h under C++17) must not drown ours. -isystem beats PGXS's -I.
PG_CPPFLAGS = -isystem $(PG_INCLUDE_SERVER) -Isrc
# -MMD -MP: PGXS does not track header dependencies; a struct changed in a
# header must rebuild every object that uses it (shared memory layouts!).
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-missing-field-initializers -MMD -MP
SHLIB_LINK = -lstdc++ -lcurl -lhiredis -lxxhash -lanl

# No LLVM bitcode. Debian's PostgreSQL 15 is built --with-llvm, so PGXS would
# compile every source a second time with clang to bitcode for JIT inlining.
# Our functions are C++ with exceptions and network I/O, nothing the JIT could
# usefully inline into an expression; skipping it removes a clang dependency
# and a second compiler's view of our C++.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

-include $(OBJS:.o=.d)

# ---- plain C++ parts (no Postgres) -------------------------------------
BUILD_DIR := build
TEST_CXXFLAGS := -std=c++17 -O2 -g -Wall -Wextra -Isrc -Isrc/core -Itest/fake_gpu
FAKE_GPU_LIB_SRCS := $(filter-out test/fake_gpu/main.cpp,$(wildcard test/fake_gpu/*.cpp))
UNIT_SRCS := $(wildcard test/unit/*.cpp)

.PHONY: unit fake_gpu npc_load router_bench
unit: $(BUILD_DIR)/unit_tests
fake_gpu: $(BUILD_DIR)/fake_gpu
npc_load: $(BUILD_DIR)/npc_load $(BUILD_DIR)/echo_worker
router_bench: $(BUILD_DIR)/router_bench

$(BUILD_DIR)/unit_tests: $(CORE_SRCS) $(FAKE_GPU_LIB_SRCS) $(UNIT_SRCS) $(wildcard src/core/*.hpp test/fake_gpu/*.hpp test/unit/*.hpp)
	@mkdir -p $(BUILD_DIR)
	$(CXX) $(TEST_CXXFLAGS) $(CORE_SRCS) $(FAKE_GPU_LIB_SRCS) $(UNIT_SRCS) \
		-lgtest -lgtest_main -lcurl -lhiredis -levent -lxxhash -lanl -lpthread -o $@

$(BUILD_DIR)/fake_gpu: $(wildcard test/fake_gpu/*.cpp test/fake_gpu/*.hpp)
	@mkdir -p $(BUILD_DIR)
	$(CXX) $(TEST_CXXFLAGS) $(wildcard test/fake_gpu/*.cpp) -levent -lxxhash -lpthread -o $@

# The game-server load generator (benchmarks and the demo), on libpq.
$(BUILD_DIR)/npc_load: test/bench/npc_load.cpp
	@mkdir -p $(BUILD_DIR)
	$(CXX) $(TEST_CXXFLAGS) -I$(shell $(PG_CONFIG) --includedir) $< -L$(shell $(PG_CONFIG) --libdir) -lpq -o $@

# The overhead benchmark's baseline worker (libpq only).
$(BUILD_DIR)/echo_worker: test/bench/echo_worker.cpp
	@mkdir -p $(BUILD_DIR)
	$(CXX) $(TEST_CXXFLAGS) -I$(shell $(PG_CONFIG) --includedir) $< -L$(shell $(PG_CONFIG) --libdir) -lpq -o $@

# The routing benchmark: the router's own code against simulated GPUs.
$(BUILD_DIR)/router_bench: test/bench/router_bench.cpp $(CORE_SRCS) $(wildcard src/core/*.hpp)
	@mkdir -p $(BUILD_DIR)
	$(CXX) $(TEST_CXXFLAGS) $< $(CORE_SRCS) -lcurl -lhiredis -lxxhash -lanl -lpthread -o $@

clean: clean-build
.PHONY: clean-build
clean-build:
	rm -f $(BUILD_DIR)/unit_tests $(BUILD_DIR)/fake_gpu $(BUILD_DIR)/npc_load $(BUILD_DIR)/echo_worker $(BUILD_DIR)/router_bench
