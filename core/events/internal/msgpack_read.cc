#include "core/events/internal/msgpack_read.h"

#include <limits>
#include <string>

#include "core/events/internal/msgpack_scan.h"

namespace kvindex::decoding {

using msgpack::type::object_type;

std::string_view TypeName(const msgpack::object& o) {
  switch (o.type) {
    case object_type::NIL: return "nil";
    case object_type::BOOLEAN: return "bool";
    case object_type::POSITIVE_INTEGER: return "uint";
    case object_type::NEGATIVE_INTEGER: return "negative int";
    case object_type::FLOAT32: return "float32";
    case object_type::FLOAT64: return "float64";
    case object_type::STR: return "str";
    case object_type::BIN: return "bin";
    case object_type::ARRAY: return "array";
    case object_type::MAP: return "map";
    case object_type::EXT: return "ext";
  }
  return "unknown";
}

absl::Status WrongType(const Loc& loc, std::string_view expected, const msgpack::object& got) {
  return Fail(DecodeErrorReason::kWrongType, loc,
              Cat("expected ", expected, ", got ", TypeName(got)));
}


std::string_view StrOf(const msgpack::object& o) {
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

// Unsigned integer in [0, max].
absl::Status ReadUint(const msgpack::object& o, const Loc& loc, uint64_t max, uint64_t* out) {
  if (o.type != object_type::POSITIVE_INTEGER) return WrongType(loc, "non-negative int", o);
  if (o.via.u64 > max) {
    return Fail(DecodeErrorReason::kTooLarge, loc, Cat(o.via.u64, " exceeds ", max));
  }
  *out = o.via.u64;
  return absl::OkStatus();
}

std::string HashLabel(int64_t index) { return index < 0 ? "" : Cat("hash ", index, ": "); }

// An engine hash: an int of any width (negative: two's complement) or bytes
// (the last 8 bytes big-endian; fewer bytes: their big-endian value).
// `index` >= 0 names the hash's position in its list in errors.
absl::Status ReadHash(const msgpack::object& o, const Loc& loc, int64_t index, uint64_t* out) {
  switch (o.type) {
    case object_type::POSITIVE_INTEGER:
      *out = o.via.u64;
      return absl::OkStatus();
    case object_type::NEGATIVE_INTEGER:
      *out = static_cast<uint64_t>(o.via.i64);
      return absl::OkStatus();
    case object_type::BIN: {
      const uint32_t n = o.via.bin.size;
      if (n == 0) {
        return Fail(DecodeErrorReason::kWrongType, loc, Cat(HashLabel(index), "empty bytes"));
      }
      const size_t take = n < 8 ? n : 8;
      *out = ReadBigEndian(reinterpret_cast<const unsigned char*>(o.via.bin.ptr) + (n - take), take);
      return absl::OkStatus();
    }
    default:
      return Fail(DecodeErrorReason::kWrongType, loc,
                  Cat(HashLabel(index), "expected int or bin, got ", TypeName(o)));
  }
}

absl::Status ReadHashes(const msgpack::object& o, const Loc& loc, size_t max_blocks,
                        std::vector<uint64_t>* out) {
  if (o.type != object_type::ARRAY) return WrongType(loc, "array", o);
  const uint32_t n = o.via.array.size;
  if (n > max_blocks) {
    return Fail(DecodeErrorReason::kTooLarge, loc,
                Cat(n, " blocks exceed the limit of ", max_blocks));
  }
  out->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    absl::Status s = ReadHash(o.via.array.ptr[i], loc, i, &(*out)[i]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ReadTokens(const msgpack::object& o, const Loc& loc, std::vector<uint32_t>* out) {
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  const uint32_t n = o.via.array.size;  // caller checked the type and count
  out->resize(n);
  const msgpack::object* items = o.via.array.ptr;
  for (uint32_t i = 0; i < n; ++i) {
    const msgpack::object& t = items[i];
    if (t.type == object_type::POSITIVE_INTEGER && t.via.u64 <= kMax) {
      (*out)[i] = static_cast<uint32_t>(t.via.u64);
      continue;
    }
    if (t.type == object_type::POSITIVE_INTEGER || t.type == object_type::NEGATIVE_INTEGER) {
      return Fail(DecodeErrorReason::kTooLarge, loc,
                  Cat("token ", i, " does not fit uint32"));
    }
    return Fail(DecodeErrorReason::kWrongType, loc,
                Cat("token ", i, ": expected int, got ", TypeName(t)));
  }
  return absl::OkStatus();
}

bool IsNil(const msgpack::object* o) { return o == nullptr || o->type == object_type::NIL; }

absl::Status ReadOptionalString(const msgpack::object* o, const Loc& loc,
                                std::optional<std::string>* out) {
  if (IsNil(o)) return absl::OkStatus();
  if (o->type != object_type::STR) return WrongType(loc, "str or nil", *o);
  out->emplace(StrOf(*o));
  return absl::OkStatus();
}

absl::Status ReadOptionalInt64(const msgpack::object* o, const Loc& loc,
                               std::optional<int64_t>* out) {
  if (IsNil(o)) return absl::OkStatus();
  if (o->type == object_type::NEGATIVE_INTEGER) {
    *out = o->via.i64;
    return absl::OkStatus();
  }
  if (o->type != object_type::POSITIVE_INTEGER) return WrongType(loc, "int or nil", *o);
  uint64_t v = 0;
  absl::Status s = ReadUint(*o, loc, std::numeric_limits<int64_t>::max(), &v);
  if (s.ok()) *out = static_cast<int64_t>(v);
  return s;
}

}  // namespace kvindex::decoding
