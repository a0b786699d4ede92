#include "proto/text_proto.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace kvindex {
namespace {

// Keeps the parser's messages instead of letting protobuf log them.
class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    errors.push_back(absl::StrCat(line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {}

  std::vector<std::string> errors;
};

}  // namespace

absl::Status ParseTextProto(const std::string& text, google::protobuf::Message* message) {
  CollectErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (parser.ParseFromString(text, message)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("not a ", message->GetTypeName(), " in text format: ",
                                                 absl::StrJoin(errors.errors, "; ")));
}

}  // namespace kvindex
