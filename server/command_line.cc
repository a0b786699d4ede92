#include "server/command_line.h"

#include <string>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/strip.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace kvindex::server {

absl::Status CheckCommandLineFlags(int argc, char** argv) {
  // absl's own flags, not in the registry; absl reads them itself.
  constexpr absl::string_view kUsageSwitches[] = {"help", "helpfull", "helpshort", "helppackage", "version",
                                                  "only_check_args"};
  constexpr absl::string_view kValued[] = {"helpon", "helpmatch", "flagfile", "fromenv", "tryfromenv", "undefok"};
  // Names --undefok lets through when undefined (absl: comma-separated, given anywhere).
  absl::flat_hash_set<std::string> undefok;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::ConsumePrefix(&arg, "--undefok") && !absl::ConsumePrefix(&arg, "-undefok")) continue;
    if (!absl::ConsumePrefix(&arg, "=")) arg = i + 1 < argc ? absl::string_view(argv[i + 1]) : "";
    for (absl::string_view name : absl::StrSplit(arg, ',', absl::SkipEmpty())) undefok.insert(std::string(name));
  }
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // a positional argument
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    if (name.empty()) break;  // "--=x": absl ends the flags there too
    if (absl::c_linear_search(kUsageSwitches, name)) continue;
    if (absl::c_linear_search(kValued, name)) {
      if (eq == absl::string_view::npos) ++i;
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      absl::CommandLineFlag* negated = absl::StartsWith(name, "no") ? absl::FindCommandLineFlag(name.substr(2)) : nullptr;
      if (negated != nullptr && negated->IsOfType<bool>()) {
        if (eq == absl::string_view::npos) continue;
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      if (undefok.contains(name) || (absl::StartsWith(name, "no") && undefok.contains(name.substr(2)))) continue;
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;  // --flag alone sets a boolean
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvindex::server
