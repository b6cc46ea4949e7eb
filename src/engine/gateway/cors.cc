#include "engine/gateway/cors.h"

namespace keel::engine::gateway {
namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string_view> FindHeader(std::span<const Header> headers, std::string_view name) {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.first, name)) return std::string_view(h.second);
  }
  return std::nullopt;
}

HeaderList CorsPreflightHeaders(std::span<const Header> request_headers) {
  HeaderList out = CorsResponseHeaders(request_headers);
  out.emplace_back("access-control-allow-methods", std::string(kCorsAllowMethods));
  out.emplace_back(
      "access-control-allow-headers",
      std::string(FindHeader(request_headers, "access-control-request-headers").value_or("*")));
  out.emplace_back("access-control-max-age", std::string(kCorsMaxAgeSeconds));
  return out;
}

HeaderList CorsResponseHeaders(std::span<const Header> request_headers) {
  HeaderList out;
  out.reserve(6);  // and CorsPreflightHeaders' three
  out.emplace_back("access-control-allow-origin",
                   std::string(FindHeader(request_headers, "origin").value_or("*")));
  out.emplace_back("access-control-allow-credentials", "true");
  out.emplace_back("access-control-expose-headers", "*");
  return out;
}

}  // namespace keel::engine::gateway
