// The C++ / Postgres bridge: the only way across, in both directions.
//
//  * guarded(fn)  — C++ → Postgres. Every SQL-callable function and worker
//    entry point runs its C++ body through it. A C++ exception never unwinds
//    into Postgres's C frames: it is caught, its message copied into plain
//    buffers, the try block (and so every C++ frame under it) is left, and only
//    then is ereport(ERROR) raised with the exception's SQLSTATE.
//
//  * pg_call(fn)  — Postgres → C++. Wrap a *thin* call into the Postgres API
//    (no C++ objects with destructors inside fn). An ereport(ERROR) inside it
//    longjmps only as far as pg_call's own frame, is copied into a PgError and
//    thrown as a C++ exception, so destructors of the C++ caller run normally.
//
// Every longjmp therefore lands in a frame that owns no C++ resources, and
// every throw is caught before a C frame.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "core/error.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/elog.h"
#include "miscadmin.h"
#include "utils/memutils.h"
}

namespace npc_scale {

// A Postgres ERROR captured as a C++ exception (from pg_call).
class PgError : public std::exception {
 public:
  explicit PgError(const ErrorData* edata)
      : sqlerrcode_(edata->sqlerrcode),
        message_(edata->message ? edata->message : "unknown Postgres error"),
        detail_(edata->detail ? edata->detail : ""),
        hint_(edata->hint ? edata->hint : "") {}

  int sqlerrcode() const noexcept { return sqlerrcode_; }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& hint() const noexcept { return hint_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  int sqlerrcode_;
  std::string message_;
  std::string detail_;
  std::string hint_;
};

// An error that belongs to the rows being written (a trigger the game put on
// the table raising, a constraint it added, a foreign key of its own, a value
// it refuses), not to the server (disk, memory, a full NOTIFY queue, a
// serialization failure): the same write fails again however long one
// waits, so its row is set aside. A unique or exclusion violation is not:
// it depends on other rows (a game's "one running decision per NPC").
bool is_row_error(const PgError& e);

// Postgres → C++: see the header comment. Returns fn's result.
template <typename Fn>
auto pg_call(Fn&& fn) -> decltype(fn()) {
  using Result = decltype(fn());
  if constexpr (std::is_void_v<Result>) {
    pg_call([&]() -> int { fn(); return 0; });
  } else {
    MemoryContext caller_context = CurrentMemoryContext;
    // An ERROR zeroes the holdoff counters before it jumps (errfinish): a
    // call made inside HOLD_INTERRUPTS() (a commit callback) that catches one
    // must put them back, or the RESUME_INTERRUPTS() after it wraps around
    // and the backend ignores cancel and terminate for good.
    const uint32 interrupt_holdoff = InterruptHoldoffCount;
    const uint32 cancel_holdoff = QueryCancelHoldoffCount;
    ErrorData* volatile edata = nullptr;
    std::optional<Result> result;
    std::exception_ptr cxx_error;  // a C++ throw must not leave PG_TRY by unwinding
    PG_TRY();
    {
      try {
        result.emplace(fn());
      } catch (...) {
        cxx_error = std::current_exception();
      }
    }
    PG_CATCH();
    {
      // Copy the error out of ErrorContext before flushing it.
      MemoryContextSwitchTo(caller_context);
      edata = CopyErrorData();
      FlushErrorState();
      InterruptHoldoffCount = interrupt_holdoff;
      QueryCancelHoldoffCount = cancel_holdoff;
    }
    PG_END_TRY();
    if (cxx_error) std::rethrow_exception(cxx_error);
    if (edata != nullptr) {
      PgError error(edata);
      FreeErrorData(edata);
      throw error;
    }
    return std::move(*result);
  }
}

namespace bridge_detail {
// Plain buffers: they must outlive the catch block without owning memory.
struct PendingError {
  int sqlerrcode = 0;
  char message[1024] = {0};
  char detail[1024] = {0};
  char hint[512] = {0};
};

void capture(PendingError& out, int sqlerrcode, const char* message, const char* detail,
             const char* hint) noexcept;
int sqlstate_to_code(const std::string& sqlstate) noexcept;
pg_attribute_noreturn() void raise(const PendingError& pending);
}  // namespace bridge_detail

// C++ → Postgres: see the header comment. Returns fn's result.
template <typename Fn>
auto guarded(Fn&& fn) -> decltype(fn()) {
  bridge_detail::PendingError pending;
  try {
    return fn();
  } catch (const PgError& e) {
    bridge_detail::capture(pending, e.sqlerrcode(), e.what(), e.detail().c_str(),
                           e.hint().c_str());
  } catch (const Error& e) {
    bridge_detail::capture(pending, bridge_detail::sqlstate_to_code(e.sqlstate()), e.what(),
                           e.detail().c_str(), e.hint().c_str());
  } catch (const std::bad_alloc&) {
    bridge_detail::capture(pending, ERRCODE_OUT_OF_MEMORY, "npc_scale: out of memory", "", "");
  } catch (const std::exception& e) {
    bridge_detail::capture(pending, ERRCODE_INTERNAL_ERROR, e.what(), "", "");
  } catch (...) {
    bridge_detail::capture(pending, ERRCODE_INTERNAL_ERROR, "npc_scale: unknown C++ exception",
                           "", "");
  }
  // Every C++ frame of fn is gone here: raising is safe.
  bridge_detail::raise(pending);
}

}  // namespace npc_scale

// Declares a SQL-callable C entry point `name` that runs name##_impl (a C++
// function taking FunctionCallInfo and returning Datum) under guarded().
#define NPC_SQL_FUNCTION(name)                                                  \
  static Datum name##_impl(FunctionCallInfo fcinfo);                            \
  extern "C" {                                                                  \
  PG_FUNCTION_INFO_V1(name);                                                    \
  Datum name(PG_FUNCTION_ARGS) {                                                \
    return npc_scale::guarded([&]() -> Datum { return name##_impl(fcinfo); }); \
  }                                                                             \
  }                                                                             \
  static Datum name##_impl(FunctionCallInfo fcinfo)
