#include "client/cli_output.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/util/json_util.h"

namespace kvindex::cli {

Table::Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(rows_.front().size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(rows_.front().size(), 0);
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

void PrintJson(const google::protobuf::Message& message, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    json = "{}\n";  // cannot happen for kvindex.v1 messages (no Any fields)
  }
  out << json;
  if (json.empty() || json.back() != '\n') out << "\n";
}

int ReportError(std::string_view command, const absl::Status& status, std::ostream& err) {
  err << "kvindex " << command << ": " << absl::StatusCodeToString(status.code()) << ": " << status.message()
      << "\n";
  return 1;
}

int ReportUsageError(std::string_view command, const absl::Status& status, std::ostream& err) {
  err << "kvindex " << command << ": " << status.message() << "\n";
  return 2;
}

}  // namespace kvindex::cli
