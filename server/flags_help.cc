#include "server/flags_help.h"

#include <algorithm>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvindex {
namespace {

// Help text wrapped at this many columns, indented by kIndent.
constexpr size_t kWidth = 100;
constexpr absl::string_view kIndent = "      ";

void AppendWrapped(absl::string_view text, std::string* out) {
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && kIndent.size() + line.size() + 1 + word.size() > kWidth) {
      absl::StrAppend(out, kIndent, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(out, kIndent, line, "\n");
}

}  // namespace

bool IsFlagFileOf(absl::string_view flag_file, absl::string_view source_file) {
  return !flag_file.empty() && absl::EndsWith(source_file, flag_file) &&
         (flag_file.size() == source_file.size() || source_file[source_file.size() - flag_file.size() - 1] == '/');
}

bool HelpRequested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) continue;
    const absl::string_view name = arg.substr(0, arg.find('='));
    if (name == "help" || name == "helpfull" || name == "helpshort") return true;
  }
  return false;
}

std::string FlagsHelp(absl::string_view usage, std::initializer_list<absl::string_view> defined_in) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    for (absl::string_view file : defined_in) {
      if (IsFlagFileOf(flag->Filename(), file)) {
        flags.push_back(flag);
        break;
      }
    }
  }
  std::sort(flags.begin(), flags.end(), [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
    return a->Name() < b->Name();
  });
  std::string out = absl::StrCat(absl::StripTrailingAsciiWhitespace(usage), "\n\nflags:\n");
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string value = flag->DefaultValue();
    absl::StrAppend(&out, "  --", flag->Name(), "=", flag->IsOfType<std::string>() ? absl::StrCat("\"", value, "\"") : value,
                    "\n");
    AppendWrapped(flag->Help(), &out);
  }
  return out;
}

}  // namespace kvindex
