#include "options.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>

namespace metatape::tools {
namespace {

// A JSON value, as a message shows it (strings quoted, long ones cut).
std::string shown(const nlohmann::json& j) {
  std::string text = j.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

// A command-line text, as a message shows it.
std::string quoted(const std::string& text) {
  return "'" + (text.size() > 40 ? text.substr(0, 37) + "..." : text) + "'";
}

const std::string& only(const std::vector<std::string>& texts, const std::string& what) {
  if (texts.size() != 1) throw ValueError(what + ": expected one value, got " + std::to_string(texts.size()));
  return texts.front();
}

// Whether the strtod just made rounded a text below the normal range
// ("1e-400" becomes 0 or a subnormal): the user's number is not the value.
bool underflowed(double value) { return errno == ERANGE && std::fabs(value) < std::numeric_limits<double>::min(); }

// Reads `text` only to tell why finite_number refused it.
bool underflows(const std::string& text) {
  errno = 0;
  return underflowed(std::strtod(text.c_str(), nullptr));
}

// The whole text as a finite decimal double, or nothing: no leading blanks
// (strtod would skip them), nothing left over, no NaN or infinity.
std::optional<double> finite_number(const std::string& text) {
  // Hexadecimal ("0x10") is strtod's too, but no one means 16 iterations so.
  if (text.empty() || std::isspace(static_cast<unsigned char>(text.front())) ||
      text.find_first_of("xX") != std::string::npos)
    return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(value) || underflowed(value)) return std::nullopt;
  return value;
}

// The exact integer a text names, if it names one that fits T: digits (with
// a '-' only for signed T), or a number like 2e4 that is an integer of at most
// 2^53 in magnitude.
template <class T>
std::optional<T> exact_integer(const std::string& text) {
  T value{};
  const char* first = text.data();
  const char* last = first + text.size();
  const auto [end, error] = std::from_chars(first, last, value);
  if (error == std::errc() && end == last) return value;
  if (error == std::errc::result_out_of_range) return std::nullopt;
  const std::optional<double> real = finite_number(text);
  constexpr double exact = 9007199254740992.0;  // 2^53
  if (!real || *real != std::floor(*real) || std::fabs(*real) > exact) return std::nullopt;
  if (*real < static_cast<double>(std::numeric_limits<T>::lowest())) return std::nullopt;
  return static_cast<T>(*real);
}

// Whether a text is an integer too large for T (so the message can say so,
// rather than call it not a number).
bool looks_integral(const std::string& text) {
  std::size_t i = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
  if (i == text.size()) return false;
  for (; i < text.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
  return true;
}

}  // namespace

template <class T>
std::string Whole<T>::describe() const {
  return "an integer in " + std::to_string(min) + ".." + std::to_string(max);
}

template <class T>
std::string Whole<T>::type_name() const {
  return (std::is_signed_v<T> ? "INT:" : "UINT:") + std::to_string(min) + ".." + std::to_string(max);
}

template <class T>
void Whole<T>::check(T value, const std::string& what) const {
  if (value < min || value > max)
    throw ValueError(what + ": " + std::to_string(value) + " is out of range: expected " + describe() +
                     (why.empty() ? "" : " (" + why + ")"));
}

template <class T>
T Whole<T>::parse(const std::vector<std::string>& texts, const std::string& what) const {
  const std::string& text = only(texts, what);
  const std::optional<T> value = exact_integer<T>(text);
  if (!value) {
    const std::optional<double> real = finite_number(text);
    const bool integral = real && *real == std::floor(*real);
    if (integral && !looks_integral(text) && *real >= static_cast<double>(min) && *real <= static_cast<double>(max))
      throw ValueError(what + ": " + quoted(text) +
                       " is inexact: a number written with an exponent is read exactly only up to 2^53; write its "
                       "digits");
    const bool too_large = looks_integral(text) || integral;
    throw ValueError(what + ": " + quoted(text) + (too_large ? " is out of range" : " is not an integer") +
                     ": expected " + describe() + (too_large && !why.empty() ? " (" + why + ")" : ""));
  }
  check(*value, what);
  return *value;
}

template <class T>
T Whole<T>::from_json(const nlohmann::json& j, const std::string& what) const {
  // nlohmann keeps integers as int64 or uint64 as written; get<T> would wrap
  // one into the other, so the sign and size are checked first.
  T value{};
  if (j.is_number_unsigned()) {
    const std::uint64_t u = j.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
      throw ValueError(what + ": " + shown(j) + " is out of range: expected " + describe());
    value = static_cast<T>(u);
  } else if (j.is_number_integer()) {
    const std::int64_t i = j.get<std::int64_t>();
    if (i < 0 && std::is_unsigned_v<T>)
      throw ValueError(what + ": " + shown(j) + " is out of range: expected " + describe());
    value = static_cast<T>(i);
  } else {
    throw ValueError(what + ": " + shown(j) + " is not an integer: expected " + describe());
  }
  check(value, what);
  return value;
}

template struct Whole<std::int64_t>;
template struct Whole<std::uint64_t>;

std::string Reals::describe() const {
  return std::string("a finite number ") + (exclusive ? "> " : ">= ") + show(min) + (infinity ? ", or inf" : "");
}

std::string Reals::type_name() const {
  return std::string("REAL:") + (exclusive ? ">" : ">=") + show(min) + (infinity ? "|inf" : "");
}

nlohmann::json Reals::to_json(double value) const {
  if (std::isinf(value) && value > 0) return "inf";
  return value;
}

std::string Reals::show(double value) const {
  if (std::isinf(value) && value > 0) return "inf";
  std::ostringstream out;
  out << value;  // %g-like: 0.001, 1e-08, 70000
  return out.str();
}

void Reals::check(double value, const std::string& what) const {
  if (infinity && std::isinf(value) && value > 0) return;
  if (!std::isfinite(value) || value < min || (exclusive && value == min))
    throw ValueError(what + ": " + show(value) + " is out of range: expected " + describe());
}

double Reals::parse(const std::vector<std::string>& texts, const std::string& what) const {
  const std::string& text = only(texts, what);
  if (infinity && text == "inf") return std::numeric_limits<double>::infinity();
  const std::optional<double> value = finite_number(text);
  if (!value && underflows(text))
    throw ValueError(what + ": " + quoted(text) + " is too small for a double (it would become 0): expected " +
                     describe());
  if (!value) throw ValueError(what + ": " + quoted(text) + " is not a finite number: expected " + describe());
  check(*value, what);
  return *value;
}

double Reals::from_json(const nlohmann::json& j, const std::string& what) const {
  // NaN and infinity are written by nlohmann as null, so are refused here;
  // an option that accepts infinity writes it as "inf" (to_json).
  if (infinity && j == "inf") return std::numeric_limits<double>::infinity();
  if (!j.is_number()) throw ValueError(what + ": " + shown(j) + " is not a number: expected " + describe());
  const double value = j.get<double>();
  check(value, what);
  return value;
}

std::string Choices::describe() const {
  std::string out = "one of ";
  for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

std::string Choices::type_name() const {
  std::string out = "{";
  for (std::size_t i = 0; i < names.size(); ++i) out += (i ? "," : "") + names[i];
  return out + "}";
}

void Choices::check(const std::string& value, const std::string& what) const {
  for (const std::string& name : names)
    if (value == name) return;
  throw ValueError(what + ": " + quoted(value) + " is not a choice: expected " + describe());
}

std::string Choices::parse(const std::vector<std::string>& texts, const std::string& what) const {
  const std::string& text = only(texts, what);
  check(text, what);
  return text;
}

std::string Choices::from_json(const nlohmann::json& j, const std::string& what) const {
  if (!j.is_string()) throw ValueError(what + ": " + shown(j) + " is not a name: expected " + describe());
  check(j.get<std::string>(), what);
  return j.get<std::string>();
}

std::string Text::parse(const std::vector<std::string>& texts, const std::string& what) const {
  return only(texts, what);
}

std::string Text::from_json(const nlohmann::json& j, const std::string& what) const {
  if (!j.is_string()) throw ValueError(what + ": " + shown(j) + " is not a text");
  return j.get<std::string>();
}

bool Flag::from_json(const nlohmann::json& j, const std::string& what) const {
  if (!j.is_boolean()) throw ValueError(what + ": " + shown(j) + " is not true or false");
  return j.get<bool>();
}

std::string IntegerList::describe() const {
  return "1 to " + std::to_string(max_count) + " comma-separated integers in " + std::to_string(each.min) + ".." +
         std::to_string(each.max);
}

std::string IntegerList::type_name() const {
  return "INT,...:" + std::to_string(each.min) + ".." + std::to_string(each.max);
}

std::string IntegerList::show(const Value& value) const {
  std::string out;
  for (std::size_t i = 0; i < value.size(); ++i) out += (i ? "," : "") + std::to_string(value[i]);
  return out;
}

void IntegerList::check(const Value& value, const std::string& what) const {
  if (value.empty() || value.size() > max_count)
    throw ValueError(what + ": " + std::to_string(value.size()) + " values: expected " + describe());
  for (std::int64_t v : value) each.check(v, what);
}

IntegerList::Value IntegerList::parse(const std::vector<std::string>& texts, const std::string& what) const {
  Value out;
  for (const std::string& text : texts) {
    if (out.size() == max_count)
      throw ValueError(what + ": more than " + std::to_string(max_count) + " values: expected " + describe());
    out.push_back(each.parse({text}, what));
  }
  check(out, what);
  return out;
}

IntegerList::Value IntegerList::from_json(const nlohmann::json& j, const std::string& what) const {
  if (!j.is_array()) throw ValueError(what + ": " + shown(j) + " is not a list: expected " + describe());
  Value out;
  for (const nlohmann::json& v : j) out.push_back(each.from_json(v, what));
  check(out, what);
  return out;
}

}  // namespace metatape::tools
