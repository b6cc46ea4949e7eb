// CORS on gateway actor routes (actors.md §5.7): the gateway answers every OPTIONS on an
// actor route itself with 204 and these headers, and adds the non-preflight headers to every
// other actor-route response, including its own early errors. Pure; thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::engine::gateway {

using Header = std::pair<std::string, std::string>;
using HeaderList = std::vector<Header>;

inline constexpr int kPreflightStatus = 204;
inline constexpr std::string_view kCorsAllowMethods = "GET, POST, PUT, DELETE, OPTIONS, PATCH";
inline constexpr std::string_view kCorsMaxAgeSeconds = "86400";

// Value of the first header named `name` (ASCII case-insensitive); nullopt when absent.
std::optional<std::string_view> FindHeader(std::span<const Header> headers, std::string_view name);

// Preflight response headers, lower-case names, in this order:
//   access-control-allow-origin: the request's Origin, or "*" when absent
//   access-control-allow-credentials: true
//   access-control-expose-headers: *
//   access-control-allow-methods: GET, POST, PUT, DELETE, OPTIONS, PATCH
//   access-control-allow-headers: the request's Access-Control-Request-Headers, or "*"
//   access-control-max-age: 86400
HeaderList CorsPreflightHeaders(std::span<const Header> request_headers);

// Headers for non-preflight actor-route responses: allow-origin (echoed Origin or "*"),
// allow-credentials: true, expose-headers: *.
HeaderList CorsResponseHeaders(std::span<const Header> request_headers);

}  // namespace keel::engine::gateway
