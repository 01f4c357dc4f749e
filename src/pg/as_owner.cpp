// npc_scale._as_owner_of(rel, statement): runs a statement on a managed
// table's rows as that table's owner, as a security-restricted operation.
// The game's triggers, CHECK constraints, generated columns and the actions
// of foreign keys pointing at the table run as whoever changes the rows, and
// the maintenance worker is the bootstrap superuser. A plain SET ROLE is not
// enough: the game's code could RESET ROLE back to the session's superuser.
// Restricted as REFRESH MATERIALIZED VIEW and VACUUM restrict the owner's
// code they run: no SET ROLE, no temporary objects, settings it changes
// undone on return.
#include <string>

#include "guard.hpp"
#include "pg_text.hpp"
#include "spi.hpp"

extern "C" {
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"
}

NPC_SQL_FUNCTION(npc_scale_as_owner_of) {
  using namespace npc_scale;
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) {
    throw Error(sqlstate::null_value_not_allowed, "relation and statement must not be null");
  }
  const Oid rel = PG_GETARG_OID(0);
  const std::string statement = text_arg(PG_GETARG_DATUM(1));
  const Oid owner = pg_call([&] {
    HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
    if (!HeapTupleIsValid(tuple)) return InvalidOid;
    Oid o = reinterpret_cast<Form_pg_class>(GETSTRUCT(tuple))->relowner;
    ReleaseSysCache(tuple);
    return o;
  });
  if (owner == InvalidOid) {
    throw Error(sqlstate::undefined_table, "relation with OID " + std::to_string(rel) + " does not exist");
  }
  Oid saved_user;
  int saved_context;
  GetUserIdAndSecContext(&saved_user, &saved_context);
  // Never a way up: only a caller with the owner's rights already (its
  // member, or a superuser) may act as the owner.
  if (!pg_call([&] { return has_privs_of_role(saved_user, owner); })) {
    const std::string name = pg_call([&] {
      const char* n = get_rel_name(rel);
      return std::string(n ? n : std::to_string(rel));
    });
    throw Error(sqlstate::insufficient_privilege,
                "must be a member of the owner of relation \"" + name + "\" to change its rows as the owner");
  }
  // An error aborts the (sub)transaction, which restores both the user and
  // the settings; the guard restores them on the way out otherwise (neither
  // call raises: popping a GUC level runs only assign hooks, and setting the
  // user is two assignments).
  struct Restore {
    Oid user;
    int context;
    int nest_level;
    ~Restore() {
      AtEOXact_GUC(false, nest_level);
      SetUserIdAndSecContext(user, context);
    }
  };
  with_spi([&] {
    SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    Restore restore{saved_user, saved_context, NewGUCNestLevel()};
    pg_call([&] {
      const int rc = SPI_execute(statement.c_str(), false, 0);
      if (rc < 0) {
        // SPI refuses transaction control (COMMIT, ROLLBACK) and the like.
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("npc_scale: statement as the owner of relation %u refused by SPI (%s)", rel,
                               SPI_result_code_string(rc)),
                        errdetail("Statement: %.200s", statement.c_str())));
      }
    });
  });
  PG_RETURN_VOID();
}
