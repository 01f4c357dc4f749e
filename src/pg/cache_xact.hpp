// A transaction's writes to the general cache (cache_set, cache_delete,
// cache_clear) as L1 and L2 see them: a set reaches them at COMMIT, never
// on a rollback (of the transaction or of a savepoint), while the
// transaction itself reads its own writes. Deletes are immediate (bottom-up,
// in tiered_cache) and repeated at COMMIT, since a reader may have promoted
// the L3 row the transaction was deleting. L3 is a table: transactional
// already.
#pragma once

#include <optional>
#include <string>

namespace npc_scale {

// A cache_set's L1/L2 write, for COMMIT. ttl_s <= 0: no expiry.
void xact_cache_note_set(const std::string& key, const std::string& value, int64_t ttl_s);
// A removal done now, to repeat at COMMIT. key nullptr: the whole cache (cache_clear).
void xact_cache_note_removal(const std::string* key);
// Whether this transaction's own writes decide the key: a set (*value is
// what it set, or nullopt if that has expired), a delete or a clear after it
// (*value nullopt).
bool xact_cache_own(const std::string& key, std::optional<std::string>* value);

}  // namespace npc_scale
