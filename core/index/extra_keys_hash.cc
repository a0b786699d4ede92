#include "core/index/extra_keys_hash.h"

#include <xxhash.h>

namespace kvindex {
namespace {

void PutLE32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutLE64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutBytes(char tag, std::string_view s, std::string* out) {
  out->push_back(tag);
  PutLE32(static_cast<uint32_t>(s.size()), out);
  out->append(s);
}

}  // namespace

void ExtraKeysHasher::AddStr(std::string_view s) {
  PutBytes('s', s, &items_);
  ++count_;
}

void ExtraKeysHasher::Add(const ExtraKey& key) {
  AppendItem(key);
  ++count_;
}

void ExtraKeysHasher::AddMultimodal(std::string_view identifier, int64_t relative_offset) {
  items_.push_back('l');
  PutLE32(2, &items_);
  PutBytes('s', identifier, &items_);
  items_.push_back('i');
  PutLE64(static_cast<uint64_t>(relative_offset), &items_);
  ++count_;
}

void ExtraKeysHasher::AppendItem(const ExtraKey& key) {
  switch (key.kind) {
    case ExtraKey::Kind::kNil: items_.push_back('n'); return;
    case ExtraKey::Kind::kInt:
      items_.push_back(key.number_unsigned ? 'u' : 'i');
      PutLE64(static_cast<uint64_t>(key.number), &items_);
      return;
    case ExtraKey::Kind::kStr: PutBytes('s', key.bytes, &items_); return;
    case ExtraKey::Kind::kBytes: PutBytes('b', key.bytes, &items_); return;
    case ExtraKey::Kind::kList:
      items_.push_back('l');
      PutLE32(static_cast<uint32_t>(key.items.size()), &items_);
      for (const ExtraKey& item : key.items) AppendItem(item);
      return;
  }
}

uint64_t ExtraKeysHasher::Hash(uint64_t h) {
  if (count_ == 0) return h;
  std::string header;
  PutLE64(h, &header);
  header.push_back('l');
  PutLE32(count_, &header);  // kHeader bytes, small-string: no allocation
  items_.replace(0, kHeader, header);
  return XXH3_64bits(items_.data(), items_.size());
}

void AddEventExtraKeys(const ExtraKey& entry, std::string_view lora_name, ExtraKeysHasher& hasher) {
  if (entry.kind != ExtraKey::Kind::kList) return;
  size_t first = 0;
  if (!lora_name.empty() && !entry.items.empty() && entry.items[0].kind == ExtraKey::Kind::kStr &&
      entry.items[0].bytes == lora_name) {
    first = 1;
  }
  for (size_t i = first; i < entry.items.size(); ++i) hasher.Add(entry.items[i]);
}

void AddQueryExtraKeys(absl::Span<const MultimodalInput> inputs, std::string_view cache_salt, uint64_t start,
                       uint32_t block_size, ExtraKeysHasher& hasher) {
  const uint64_t end = start + block_size;
  for (const MultimodalInput& input : inputs) {
    const uint64_t input_end = uint64_t{input.offset} + input.length;
    if (input.offset < end && input_end > start) {
      hasher.AddMultimodal(input.identifier, static_cast<int64_t>(input.offset) - static_cast<int64_t>(start));
    }
  }
  if (start == 0 && !cache_salt.empty()) hasher.AddStr(cache_salt);
}

}  // namespace kvindex
