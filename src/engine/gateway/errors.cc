#include "engine/gateway/errors.h"

#include <array>
#include <cstdint>

#include "base/utf8.h"

namespace keel::engine::gateway {
namespace {

struct StatusEntry {
  std::string_view group;
  std::string_view code;
  int status;
};

constexpr std::array<StatusEntry, 15> kStatusTable = {{
    {"api", "not_found", 404},
    {"api", "unauthorized", 401},
    {"api", "forbidden", 403},
    {"guard", "rate_limit", 429},
    {"guard", "request_timeout", 504},
    {"guard", "service_unavailable", 503},
    {"guard", "actor_ready_timeout", 503},
    {"guard", "no_route", 404},
    {"guard", "invalid_request_body", 413},
    {"actor", "not_found", 404},
    {"actor", "storage_failed", 503},
    {"guard", "upstream_error", 502},
    {"guard", "routing_error", 502},
    {"guard", "retry_attempts_exceeded", 502},
    {"guard", "invalid_response_body", 502},
}};

}  // namespace

bool IsInternalError(const Error& error) {
  return error.group() == "unknown" || error.group() == "internal" ||
         error.Is("core", "internal_error");
}

int HttpStatusFor(const Error& error) {
  for (const StatusEntry& e : kStatusTable) {
    if (error.Is(e.group, e.code)) return e.status;
  }
  if (IsInternalError(error)) return 500;
  return 400;
}

std::string JsonQuote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<uint8_t>(text[i]);
    if (c >= 0x80) {
      size_t bad = 0;
      const size_t len = Utf8SequenceLength(text, i, &bad);
      if (len == 0) {
        out += "\\ufffd";
        i += bad;
      } else {
        out.append(text.substr(i, len));
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
  return out;
}

std::string ErrorJson(const Error& error, std::string_view metadata_json) {
  std::string out = "{\"group\":";
  out += JsonQuote(error.group());
  out += ",\"code\":";
  out += JsonQuote(error.code());
  out += ",\"message\":";
  out += JsonQuote(error.message());
  out += ",\"metadata\":";
  out += metadata_json;
  out += '}';
  return out;
}

std::string CloseReason(const Error& error, std::string_view ray_id) {
  std::string reason = IsInternalError(error) ? "core.internal_error" : error.Id();
  reason += '#';
  reason += ray_id;
  if (reason.size() <= kMaxCloseReasonBytes) return reason;
  size_t cut = kMaxCloseReasonBytes;
  // Never split a UTF-8 sequence: back off over continuation bytes to a lead byte.
  while (cut > 0 && (static_cast<uint8_t>(reason[cut]) & 0xC0) == 0x80) --cut;
  reason.resize(cut);
  return reason;
}

uint16_t CloseCode(const Error& error) {
  if (error.Is("ws", "eviction") || error.Is("ws", "connection_closed")) return kCloseNormal;
  return kCloseInternalError;
}

std::optional<ParsedCloseReason> ParseCloseReason(std::string_view reason) {
  ParsedCloseReason out;
  std::string_view main = reason;
  size_t hash = reason.find('#');
  if (hash != std::string_view::npos) {
    main = reason.substr(0, hash);
    out.ray_id = std::string(reason.substr(hash + 1));
  }
  size_t dot = main.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == main.size()) return std::nullopt;
  out.group = std::string(main.substr(0, dot));
  out.code = std::string(main.substr(dot + 1));
  return out;
}

}  // namespace keel::engine::gateway
