// Short transactions for the workers, and the few SPI helpers they need.
// Every call into Postgres goes through pg_call, so an ERROR becomes a C++
// exception; in_transaction() then aborts the transaction and rethrows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "guard.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace npc_scale {

// Runs fn in its own transaction (SPI connected, snapshot pushed) and commits.
// Never holds the transaction across anything but fn's SQL.
template <typename Fn>
void in_transaction(const char* activity, Fn&& fn);

// Runs fn with SPI connected, inside the caller's transaction (SQL-callable
// functions); SPI is finished on every path.
template <typename Fn>
void with_spi(Fn&& fn);

// A statement prepared once per process (SPI_keepplan) and reused, always
// with its generic plan. Every statement here reads or writes a few rows by
// key, so a plan made for the actual parameter values is never better — but
// the plan cache's default (custom plans while they look cheaper than the
// generic one, which an array parameter always makes them look) re-plans on
// every call: measured as half of the dispatcher's answer-write time.
class SavedPlan {
 public:
  SavedPlan(const char* sql, std::vector<Oid> arg_types) : sql_(sql), arg_types_(std::move(arg_types)) {}
  // Executes with the given datums (nulls: 'n' per null argument, else ' ').
  // Returns SPI_processed.
  uint64_t execute(const std::vector<Datum>& args, const char* nulls = nullptr, bool read_only = false);
  // The same, read-only, on a snapshot taken now (GetLatestSnapshot): it sees
  // what committed after the statement's or the transaction's own snapshot.
  uint64_t execute_on_latest(const std::vector<Datum>& args, const char* nulls = nullptr);

 private:
  void prepare();
  const char* sql_;
  std::vector<Oid> arg_types_;
  SPIPlanPtr plan_ = nullptr;
};

// Column values of row `row` of SPI_tuptable (1-based column numbers).
std::optional<std::string> spi_text(uint64_t row, int col);
std::optional<int64_t> spi_int(uint64_t row, int col);
std::optional<double> spi_float(uint64_t row, int col);
bool spi_bool(uint64_t row, int col);

// True when CREATE EXTENSION npc_scale has run in this database (inside a transaction).
bool extension_present();
// The same, in a short transaction of its own (the workers idle until it is true).
bool extension_ready();

namespace spi_detail {
void begin(const char* activity);
void commit();
void abort() noexcept;
}  // namespace spi_detail

template <typename Fn>
void with_spi(Fn&& fn) {
  pg_call([] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "npc_scale: SPI_connect failed");
  });
  try {
    fn();
  } catch (...) {
    pg_call([] { SPI_finish(); });
    throw;
  }
  pg_call([] { SPI_finish(); });
}

template <typename Fn>
void in_transaction(const char* activity, Fn&& fn) {
  spi_detail::begin(activity);
  try {
    fn();
    spi_detail::commit();
  } catch (...) {
    spi_detail::abort();
    throw;
  }
}

}  // namespace npc_scale
