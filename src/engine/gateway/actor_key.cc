#include "engine/gateway/actor_key.h"

namespace keel::engine::gateway {
namespace {

Error InvalidKey(std::string_view why) { return Error("actor", "invalid_key", std::string(why)); }

}  // namespace

std::string SerializeActorKey(const ActorKey& key) {
  if (key.empty()) return "/";
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) {
    if (i > 0) out += '/';
    const std::string& part = key[i];
    if (part.empty()) {
      out += "\\0";
      continue;
    }
    for (char c : part) {
      if (c == '\\' || c == '/') out += '\\';
      out += c;
    }
  }
  return out;
}

Result<ActorKey> ParseActorKey(std::string_view serialized) {
  if (serialized.empty()) return Error("actor", "empty_key", "serialised actor key is empty");
  if (serialized == "/") return ActorKey{};
  ActorKey key;
  std::string part;
  // True once the current component was written as "\0"; nothing may follow it.
  bool empty_marker = false;
  // True when the current component has at least one (possibly escaped) character.
  bool has_chars = false;
  auto finish = [&]() -> Status {
    if (!empty_marker && !has_chars) return InvalidKey("empty component must be written \\0");
    key.push_back(std::move(part));
    part.clear();
    empty_marker = false;
    has_chars = false;
    return OkStatus();
  };
  for (size_t i = 0; i < serialized.size(); ++i) {
    char c = serialized[i];
    if (c == '/') {
      KEEL_RETURN_IF_ERROR(finish());
      continue;
    }
    if (empty_marker) return InvalidKey("\\0 must be a whole component");
    if (c != '\\') {
      part += c;
      has_chars = true;
      continue;
    }
    if (i + 1 >= serialized.size()) return InvalidKey("dangling escape");
    char next = serialized[++i];
    if (next == '\\' || next == '/') {
      part += next;
      has_chars = true;
    } else if (next == '0' && !has_chars) {
      empty_marker = true;
    } else {
      return InvalidKey("unknown escape");
    }
  }
  KEEL_RETURN_IF_ERROR(finish());
  return key;
}

Status ValidateSerializedActorKey(std::string_view serialized) {
  if (serialized.empty()) return Error("actor", "empty_key", "serialised actor key is empty");
  if (serialized.size() > kMaxSerializedActorKeyBytes) {
    return Error("actor", "key_too_large",
                 "serialised actor key is longer than " +
                     std::to_string(kMaxSerializedActorKeyBytes) + " bytes");
  }
  KEEL_RETURN_IF_ERROR(ParseActorKey(serialized));
  return OkStatus();
}

ActorKey ParseGatewayKey(std::string_view decoded_value) {
  ActorKey key;
  if (decoded_value.empty()) return key;
  size_t start = 0;
  while (true) {
    size_t comma = decoded_value.find(',', start);
    if (comma == std::string_view::npos) {
      key.emplace_back(decoded_value.substr(start));
      break;
    }
    key.emplace_back(decoded_value.substr(start, comma - start));
    start = comma + 1;
  }
  return key;
}

Result<std::string> FormatGatewayKey(const ActorKey& key) {
  if (key.size() == 1 && key[0].empty()) {
    return InvalidKey("the key [\"\"] cannot be written in rvt-key form");
  }
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) {
    if (key[i].find(',') != std::string::npos) {
      return InvalidKey("rvt-key components cannot contain ','");
    }
    if (i > 0) out += ',';
    out += key[i];
  }
  return out;
}

}  // namespace keel::engine::gateway
