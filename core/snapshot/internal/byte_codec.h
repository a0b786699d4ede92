#pragma once

// Little-endian encoding of a snapshot's fields: ByteSink appends to a
// string; ByteSource reads from a view and fails (returns false, forever
// after) instead of reading past its end or accepting a count its bytes
// cannot hold. Strings are LE32 length + bytes; optionals a presence byte
// (0 or 1) + the value; booleans one byte, 0 or 1 (anything else fails).
//
// Not thread-safe; values.

#include <cstdint>
#include <bit>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace kvindex::snapshot_internal {

class ByteSink {
 public:
  explicit ByteSink(std::string* out) : out_(*out) {}
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void F64(double v) { Raw(&v, 8); }
  void Str(std::string_view v) {
    U32(static_cast<uint32_t>(v.size()));
    out_.append(v.data(), v.size());
  }
  void OptStr(const std::optional<std::string>& v) {
    Bool(v.has_value());
    if (v) Str(*v);
  }
  void OptU32(const std::optional<uint32_t>& v) {
    Bool(v.has_value());
    if (v) U32(*v);
  }
  void OptBool(const std::optional<bool>& v) {
    Bool(v.has_value());
    if (v) Bool(*v);
  }

 private:
  static_assert(std::endian::native == std::endian::little, "snapshots are written little-endian");
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string& out_;
};

class ByteSource {
 public:
  explicit ByteSource(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size(); }

  bool U8(uint8_t& v) { return Raw(&v, 1); }
  bool Bool(bool& v) {
    uint8_t b = 0;
    if (!U8(b) || b > 1) return Fail();
    v = b == 1;
    return true;
  }
  bool U32(uint32_t& v) { return Raw(&v, 4); }
  bool U64(uint64_t& v) { return Raw(&v, 8); }
  bool F64(double& v) { return Raw(&v, 8); }
  bool Str(std::string& v) {
    uint32_t n = 0;
    if (!U32(n) || n > in_.size()) return Fail();
    v.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool OptStr(std::optional<std::string>& v) {
    bool present = false;
    if (!Bool(present)) return false;
    if (!present) return v.reset(), true;
    return Str(v.emplace());
  }
  bool OptU32(std::optional<uint32_t>& v) {
    bool present = false;
    if (!Bool(present)) return false;
    if (!present) return v.reset(), true;
    return U32(v.emplace());
  }
  bool OptBool(std::optional<bool>& v) {
    bool present = false;
    if (!Bool(present)) return false;
    if (!present) return v.reset(), true;
    return Bool(v.emplace());
  }
  // A count of items of at least `min_bytes` each: fails when the rest cannot hold them.
  bool Count(uint64_t& n, size_t min_bytes) {
    if (!U64(n) || (min_bytes != 0 && n > in_.size() / min_bytes)) return Fail();
    return true;
  }

 private:
  bool Raw(void* p, size_t n) {
    if (!ok_ || in_.size() < n) return Fail();
    std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool Fail() {
    ok_ = false;
    in_ = {};
    return false;
  }
  std::string_view in_;
  bool ok_ = true;
};

}  // namespace kvindex::snapshot_internal
