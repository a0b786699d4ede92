#pragma once

// How the `kvindex` subcommands print: aligned human tables by default, the
// response message as JSON with --json.

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace kvindex::cli {

// A table of left-aligned columns separated by two spaces; the header row is
// printed as given (upper case by convention).
class Table {
 public:
  explicit Table(std::vector<std::string> header);

  // Adds a row; missing cells print empty, extra cells are dropped.
  void AddRow(std::vector<std::string> cells);

  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
};

// `message` as indented JSON with proto field names and default values
// printed, followed by a newline.
void PrintJson(const google::protobuf::Message& message, std::ostream& out);

// "kvindex COMMAND: CODE: message" on `err`; returns 1 (the exit code of a
// failed call).
int ReportError(std::string_view command, const absl::Status& status, std::ostream& err);

// "kvindex COMMAND: message" on `err`; returns 2 (the exit code of a usage
// error: a bad flag value, or a file named on the command line that cannot be
// read or parsed, found before any call).
int ReportUsageError(std::string_view command, const absl::Status& status, std::ostream& err);

}  // namespace kvindex::cli
