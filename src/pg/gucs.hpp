// Configuration (GUCs) of npc_scale. Defined in gucs.cpp, registered by
// define_gucs() from _PG_init.
#pragma once

namespace npc_scale {

extern char* guc_database;  // npc_scale.database: where both workers connect

void define_gucs();

}  // namespace npc_scale
