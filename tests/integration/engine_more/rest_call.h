// One call to a TestEngine's REST API and its JSON answer, for the engine_more tests.
#pragma once

#include <chrono>
#include <concepts>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "net/client.h"
#include "support/test_engine.h"

namespace keel::testing {

struct Answer {
  int status = 0;       // 0 when the request itself failed
  nlohmann::json body;  // discarded (is_discarded()) when the body is not JSON
};

inline Answer Call(TestEngine& te, const std::string& method, const std::string& target,
                   const std::string& body = "", net::Headers headers = {}) {
  net::HttpRequest req;
  req.method = method;
  req.body = body;
  req.headers = std::move(headers);
  auto r = net::FetchSync(te.http_url() + target, std::move(req), std::chrono::seconds(10));
  if (!r.has_value()) return {};
  return {r->status, nlohmann::json::parse(r->body, nullptr, false)};
}

// A JSON body (null: none). A template, so a string literal body takes the overload above.
template <typename Json>
requires std::same_as<Json, nlohmann::json> Answer Call(TestEngine& te, const std::string& method,
                                                        const std::string& target,
                                                        const Json& body) {
  return Call(te, method, target, body.is_null() ? std::string() : body.dump());
}

// "group.code" of an error answer ("" when it is none).
inline std::string Code(const Answer& a) {
  return a.body.is_object() ? a.body.value("group", "") + "." + a.body.value("code", "") : "";
}

}  // namespace keel::testing
