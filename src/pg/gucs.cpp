#include "gucs.hpp"

extern "C" {
#include "postgres.h"
#include "utils/guc.h"
}

namespace npc_scale {

char* guc_database = nullptr;

void define_gucs() {
  // SIGHUP, not postmaster: a worker that sees the value change exits and is
  // restarted by the postmaster already connected to the new database.
  DefineCustomStringVariable("npc_scale.database",
                             "Database the npc_scale background workers connect to.", nullptr,
                             &guc_database, "postgres", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("npc_scale");
}

}  // namespace npc_scale
