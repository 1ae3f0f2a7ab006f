// The metatape command's options, each declared once. A row of an option
// table (option_tables.cpp) names the option, the field it sets, its help,
// what it accepts and whether it belongs to the run's config.json; from the
// table come the CLI11 options, the reading and writing of config.json and
// the checks of both. Numbers are parsed here, not by CLI11, because CLI11
// wraps "-1" into an unsigned field, saturates overflowing integers and
// accepts NaN: a value is taken exactly or refused with the option's name
// and what it accepts.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "run_config.hpp"

namespace metatape::tools {

// What an option accepts. Each `parse` reads the texts CLI11 collected, each
// `from_json` a config.json value; both check and throw ValueError starting
// with `what` (the option's name or the config.json field) and saying what is
// accepted.

// Whole numbers in [min, max], written as digits or, for convenience, in a
// form like 2e4 that is an exact integer of at most 2^53 (beyond, a double
// no longer holds every integer, so such text could not mean one exactly).
template <class T>
struct Whole {
  using Value = T;
  T min, max;
  std::string why = {};  // where the bound comes from, shown when it is exceeded
  std::string describe() const;
  std::string type_name() const;
  std::string show(T value) const { return std::to_string(value); }
  T parse(const std::vector<std::string>& texts, const std::string& what) const;
  T from_json(const nlohmann::json& j, const std::string& what) const;
  void check(T value, const std::string& what) const;
};
using Integers = Whole<std::int64_t>;
using Unsigned = Whole<std::uint64_t>;

// Finite numbers >= min (> min when `exclusive`); no upper bound. With
// `infinity`, also +infinity, written "inf" on the command line and in
// config.json (JSON has no infinity: nlohmann would write null).
struct Reals {
  using Value = double;
  double min = 0;
  bool exclusive = false;
  bool infinity = false;
  nlohmann::json to_json(double value) const;
  std::string describe() const;
  std::string type_name() const;
  std::string show(double value) const;
  double parse(const std::vector<std::string>& texts, const std::string& what) const;
  double from_json(const nlohmann::json& j, const std::string& what) const;
  void check(double value, const std::string& what) const;
};

// One of a list of names.
struct Choices {
  using Value = std::string;
  std::vector<std::string> names;
  std::string describe() const;
  std::string type_name() const;
  std::string show(const std::string& value) const { return value; }
  std::string parse(const std::vector<std::string>& texts, const std::string& what) const;
  std::string from_json(const nlohmann::json& j, const std::string& what) const;
  void check(const std::string& value, const std::string& what) const;
};

// Any text (a path).
struct Text {
  using Value = std::string;
  bool required = false;
  std::string describe() const { return "a text"; }
  std::string type_name() const { return "TEXT"; }
  std::string show(const std::string& value) const { return value; }
  std::string parse(const std::vector<std::string>& texts, const std::string& what) const;
  std::string from_json(const nlohmann::json& j, const std::string& what) const;
};

// A flag: present, the field becomes `sets` (false for a flag that turns
// something off, like --looped).
struct Flag {
  using Value = bool;
  bool sets = true;
  std::string describe() const { return "true or false"; }
  bool from_json(const nlohmann::json& j, const std::string& what) const;
};

// Comma-separated whole numbers, each in `each`, between 1 and max_count of them.
struct IntegerList {
  using Value = std::vector<std::int64_t>;
  Integers each;
  std::size_t max_count;
  std::string describe() const;
  std::string type_name() const;
  std::string show(const Value& value) const;
  Value parse(const std::vector<std::string>& texts, const std::string& what) const;
  Value from_json(const nlohmann::json& j, const std::string& what) const;
  void check(const Value& value, const std::string& what) const;
};

// One row of an option table over the arguments `Args` of a subcommand.
template <class Args>
struct Option {
  std::string name;  // "--inner-steps"
  std::string key;   // its field in config.json; empty when it is not part of it
  // Registers it with CLI11, the default shown from `defaults`.
  std::function<CLI::Option*(CLI::App&, const Args&)> add;
  // Sets the field from what CLI11 collected (only called when given).
  std::function<void(const CLI::Option&, Args&)> set;
  // Stored options only: write and read the field in config.json.
  std::function<void(const RunConfig&, nlohmann::json&)> write;
  std::function<void(const nlohmann::json&, RunConfig&)> read;
  // Stored options meaningful only when another stored field (`needs_key`)
  // has one of `needs_values` (--kernel-form with --algorithm kernel): given
  // otherwise, the command refuses it (refuse_inapplicable).
  std::string needs_key;
  std::vector<std::string> needs_values;
};

namespace detail {

// The parts of a row common to stored and local options; `field` maps the
// arguments (const or not) to the value.
template <class Args, class Accepts, class Field>
Option<Args> make_option(std::string name, std::string help, Accepts accepts, Field field) {
  Option<Args> o;
  o.name = name;
  o.add = [name, help, accepts, field](CLI::App& app, const Args& defaults) -> CLI::Option* {
    if constexpr (std::is_same_v<Accepts, Flag>) {
      return app.add_flag(name, help)->multi_option_policy(CLI::MultiOptionPolicy::Throw)->disable_flag_override();
    } else {
      constexpr bool list = std::is_same_v<Accepts, IntegerList>;
      CLI::Option* option = app.add_option(name, help)->type_name(accepts.type_name());
      if constexpr (list)
        option->delimiter(',')->expected(1, static_cast<int>(accepts.max_count));
      else
        option->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::Throw);
      if constexpr (std::is_same_v<Accepts, Text>) {
        option->required(accepts.required);
      } else {
        // A default outside the accepted range stands for "not given" (the
        // baseline's own rate, the run's own K) and is not shown as a value.
        try {
          accepts.check(field(defaults), name);
          option->default_str(accepts.show(field(defaults)));
        } catch (const ValueError&) {
        }
      }
      return option;
    }
  };
  o.set = [name, accepts, field](const CLI::Option& given, Args& args) {
    if constexpr (std::is_same_v<Accepts, Flag>)
      field(args) = accepts.sets;
    else
      field(args) = accepts.parse(given.results(), name);
  };
  return o;
}

}  // namespace detail

// The builders of a table's rows.
template <class Args>
struct Options {
  // A field of the run's configuration, kept in config.json under `key`
  // (default: the name without "--", dashes as underscores).
  template <class T, class Accepts>
  static Option<Args> stored(std::string name, T RunConfig::*member, std::string help, Accepts accepts,
                             std::string key = "") {
    static_assert(std::is_same_v<T, typename Accepts::Value>, "the field's type is not what the option accepts");
    auto field = [member](auto& args) -> auto& { return args.config.*member; };
    Option<Args> o = detail::make_option<Args>(name, std::move(help), accepts, field);
    if (key.empty()) {
      key = name.substr(2);
      for (char& c : key)
        if (c == '-') c = '_';
    }
    o.key = key;
    o.write = [key, member, accepts](const RunConfig& config, nlohmann::json& j) {
      if constexpr (requires { accepts.to_json(config.*member); })
        j[key] = accepts.to_json(config.*member);
      else
        j[key] = config.*member;
    };
    o.read = [key, member, accepts](const nlohmann::json& j, RunConfig& config) {
      if (!j.contains(key)) throw ValueError("run configuration: missing field '" + key + "'");
      config.*member = accepts.from_json(j.at(key), "run configuration: field '" + key + "'");
    };
    return o;
  }

  // A stored field added after the first release of config.json: a
  // configuration or checkpoint written before it has no such key and gets
  // RunConfig's default, which is what those runs did.
  template <class T, class Accepts>
  static Option<Args> added(std::string name, T RunConfig::*member, std::string help, Accepts accepts,
                            std::string key = "") {
    Option<Args> o = stored(std::move(name), member, std::move(help), accepts, std::move(key));
    o.read = [key = o.key, read = o.read](const nlohmann::json& j, RunConfig& config) {
      if (j.contains(key)) read(j, config);
    };
    return o;
  }

  // `o`, meaningful only when the stored field `key` is one of `values`; the
  // help says so: "(only with --algorithm kernel)".
  static Option<Args> only_with(Option<Args> o, std::string key, std::vector<std::string> values) {
    std::string note = " (only with --" + key + " ";
    for (char& c : note)
      if (c == '_') c = '-';
    for (std::size_t i = 0; i < values.size(); ++i) note += (i ? "|" : "") + values[i];
    note += ")";
    o.add = [add = o.add, note](CLI::App& app, const Args& defaults) {
      CLI::Option* option = add(app, defaults);
      option->description(option->get_description() + note);
      return option;
    };
    o.needs_key = std::move(key);
    o.needs_values = std::move(values);
    return o;
  }

  // A field of this invocation only (threads, device, paths).
  template <class T, class Accepts>
  static Option<Args> local(std::string name, T Args::*member, std::string help, Accepts accepts) {
    static_assert(std::is_same_v<T, typename Accepts::Value>, "the field's type is not what the option accepts");
    auto field = [member](auto& args) -> auto& { return args.*member; };
    return detail::make_option<Args>(std::move(name), std::move(help), accepts, field);
  }
};

// Registers every row of `table` with `app`; the result, parallel to the
// table, is what apply() reads after parsing.
template <class Args>
std::vector<CLI::Option*> add_options(CLI::App& app, const std::vector<Option<Args>>& table, const Args& defaults) {
  std::vector<CLI::Option*> added;
  for (const Option<Args>& o : table) added.push_back(o.add(app, defaults));
  return added;
}

// Sets the fields of the options given on the command line; throws
// ValueError naming the first bad one.
template <class Args>
void apply(const std::vector<Option<Args>>& table, const std::vector<CLI::Option*>& added, Args& args) {
  for (std::size_t i = 0; i < table.size(); ++i)
    if (added[i]->count() > 0) table[i].set(*added[i], args);
}

// Whether any stored option (a field of the run's configuration) was given.
template <class Args>
bool given_stored(const std::vector<Option<Args>>& table, const std::vector<CLI::Option*>& added) {
  for (std::size_t i = 0; i < table.size(); ++i)
    if (!table[i].key.empty() && added[i]->count() > 0) return true;
  return false;
}

// Refuses a stored option given on the command line whose needs_key field
// (in config.json form) is not one of its needs_values, naming both options:
// "--kernel-form applies only with --algorithm kernel, not maml".
template <class Args>
void refuse_inapplicable(const std::vector<Option<Args>>& table, const std::vector<CLI::Option*>& added,
                         const Args& args) {
  const nlohmann::json j = args.config.to_json();
  for (std::size_t i = 0; i < table.size(); ++i) {
    const Option<Args>& o = table[i];
    if (o.needs_key.empty() || added[i]->count() == 0 || !j.contains(o.needs_key)) continue;
    const nlohmann::json& value = j[o.needs_key];
    bool ok = false;
    for (const std::string& v : o.needs_values) ok = ok || value == v;
    if (ok) continue;
    std::string needs, option = "--" + o.needs_key;
    for (char& c : option)
      if (c == '_') c = '-';
    for (std::size_t k = 0; k < o.needs_values.size(); ++k)
      needs += (k ? (k + 1 == o.needs_values.size() ? " or " : ", ") : "") + o.needs_values[k];
    throw ValueError(o.name + " applies only with " + option + " " + needs + ", not " +
                     (value.is_string() ? value.get<std::string>() : value.dump()));
  }
}

}  // namespace metatape::tools
