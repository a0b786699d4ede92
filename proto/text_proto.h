#pragma once

// Protobuf text format parsing with the parser's messages returned as a
// status (protobuf would otherwise log them). Used for --pods_file and
// `kvindex pods apply -f`.

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace kvindex {

// Parses `text` into `message` (cleared first). INVALID_ARGUMENT carrying
// "line:column: problem" for each error when it does not parse.
[[nodiscard]] absl::Status ParseTextProto(const std::string& text, google::protobuf::Message* message);

}  // namespace kvindex
