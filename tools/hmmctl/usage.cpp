// Messages for refused command lines (see the header). What CLI11 could not
// place it keeps, in order, as each (sub)command's remaining(): the first of
// them is the word to name.
#include "usage.hpp"

namespace hmmctl {

namespace {

std::string command_names(const CLI::App& app) {
    std::string names;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; }))
        names += (names.empty() ? "" : ", ") + sub->get_name();
    return names;
}

bool is_option(const std::string& word) { return word.size() > 1 && word.front() == '-'; }

}  // namespace

std::string usage_message(const CLI::App& app, const CLI::ParseError& error) {
    // Before any command: hmmctl itself takes no option but --help.
    if (const auto extra = app.remaining(); !extra.empty()) {
        if (is_option(extra.front()))
            return "unknown option '" + extra.front() + "' (options go after the command: hmmctl COMMAND --help)";
        return "unknown command '" + extra.front() + "' (commands: " + command_names(app) + "; hmmctl --help)";
    }
    const auto parsed = app.get_subcommands();
    if (parsed.empty()) return "a command is required (commands: " + command_names(app) + "; hmmctl --help)";
    const CLI::App& sub = *parsed.front();
    const std::string name = sub.get_name();
    // run's own options come before --, CMD's after it: the usual mistake.
    const std::string help = name == "run" ? "hmmctl run [OPTIONS] -- CMD [ARG...]; CMD's own options go after --"
                                           : "hmmctl " + name + " --help";
    const auto extra = sub.remaining();
    if (dynamic_cast<const CLI::ExtrasError*>(&error) && !extra.empty())
        return name + ": " + (is_option(extra.front()) ? "unknown option '" : "unexpected argument '") +
               extra.front() + "' (" + help + ")";
    return name + ": " + error.what() + " (" + help + ")";
}

}  // namespace hmmctl
