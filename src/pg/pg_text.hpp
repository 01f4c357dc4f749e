// Small, guarded conversions between Postgres datums and C++ strings.
#pragma once

#include <string>

#include "guard.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/jsonb.h"
}

namespace npc_scale {

// text datum → std::string (detoasting under pg_call).
inline std::string text_arg(Datum d) {
  return pg_call([&] {
    text* t = DatumGetTextPP(d);
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
  });
}

// jsonb datum → its JSON text.
inline std::string jsonb_arg(Datum d) {
  return pg_call([&] {
    Jsonb* jb = DatumGetJsonbP(d);
    char* s = JsonbToCString(nullptr, &jb->root, VARSIZE(jb));
    std::string out(s);
    pfree(s);
    return out;
  });
}

inline Datum text_datum(const std::string& s) {
  return pg_call([&] { return PointerGetDatum(cstring_to_text_with_len(s.data(), s.size())); });
}

}  // namespace npc_scale
