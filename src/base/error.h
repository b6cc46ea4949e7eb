// Error values shared by every Keel module (native and wasm).
//
// An Error is a structured `group.code` pair plus a human message, the same shape the
// engine sends over the wire as text ("group.code: message") and the client protocol
// carries as separate fields. Errors are values: nothing in Keel throws across a module
// boundary. Thread-safety: plain value type.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace keel {

class [[nodiscard]] Error {
 public:
  Error() = default;
  Error(std::string group, std::string code, std::string message)
      : group_(std::move(group)), code_(std::move(code)), message_(std::move(message)) {}

  const std::string& group() const { return group_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }

  // True when this error is `group.code`.
  bool Is(std::string_view group, std::string_view code) const {
    return group_ == group && code_ == code;
  }

  // "group.code"
  std::string Id() const { return group_ + "." + code_; }
  // "group.code: message" — the one text convention for errors carried as strings.
  std::string ToString() const;

  // Parses "group.code: message" (or "group.code" alone). Returns an error with
  // group "unknown", code "unstructured" and the whole text as message when the text
  // does not start with a well-formed `group.code` prefix.
  static Error FromString(std::string_view text);

  // Returns a copy with `context: ` prepended to the message.
  Error WithContext(std::string_view context) const;

  friend bool operator==(const Error& a, const Error& b) {
    return a.group_ == b.group_ && a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  std::string group_;
  std::string code_;
  std::string message_;
};

}  // namespace keel
