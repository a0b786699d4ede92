#pragma once

// Test helper: a message's deterministic serialization (map entries in key
// order), to compare messages by bytes — MessageDifferencer finds a NaN
// different from itself.

#include <string>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message_lite.h"

namespace kvindex::testing {

inline std::string DeterministicBytes(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }  // flushed
  return out;
}

}  // namespace kvindex::testing
