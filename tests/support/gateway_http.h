// Blocking HTTP helpers for tests that drive a TestEngine through its REST API and gateway:
// one request, JSON bodies, actor creation, action calls, bounded polling. Failures of the
// request itself are reported as test failures (status 0), never thrown.
#pragma once

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "net/client.h"

namespace keel::testing {

// One HTTP request; a JSON content type is added when there is a body and no headers.
inline net::HttpResponse Call(const std::string& base, const std::string& method, const std::string& path,
                              std::string body = "", net::Headers headers = {}) {
  net::HttpRequest req;
  req.method = method;
  req.headers = std::move(headers);
  if (!body.empty() && req.headers.empty()) req.headers = {{"content-type", "application/json"}};
  req.body = std::move(body);
  auto res = net::FetchSync(base + path, std::move(req), std::chrono::seconds(10));
  if (!res.has_value()) {
    ADD_FAILURE() << method << " " << path << ": " << res.error().ToString();
    return net::HttpResponse{0, {}, ""};
  }
  return std::move(*res);
}

// The body as JSON, or the raw text as a JSON string when it is not JSON.
inline nlohmann::json ParseJson(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  return j.is_discarded() ? nlohmann::json(body) : j;
}

// Polls `pred` until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval, bounded
  }
  return pred();
}

// Creates an actor through REST; returns its id ("" on failure).
inline std::string CreateActor(const std::string& base, const std::string& name, const std::string& key,
                               const std::string& pool = "default") {
  nlohmann::json body{{"name", name}, {"key", key}, {"runner_name_selector", pool}};
  auto r = Call(base, "POST", "/actors?namespace=default", body.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  auto j = ParseJson(r.body);
  if (!j.is_object() || !j.contains("actor")) return "";
  return j["actor"]["actor_id"].get<std::string>();
}

// POST /gateway/<id>/action/<name> with JSON args; returns the parsed body.
inline nlohmann::json Action(const std::string& base, const std::string& id, const std::string& name,
                             nlohmann::json args, int* status = nullptr) {
  auto r = Call(base, "POST", "/gateway/" + id + "/action/" + name,
                nlohmann::json{{"args", args}}.dump(),
                {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
  if (status != nullptr) *status = r.status;
  return ParseJson(r.body);
}

// The actor's REST record (`actor` object), or null.
inline nlohmann::json GetActor(const std::string& base, const std::string& id) {
  auto j = ParseJson(Call(base, "GET", "/actors/" + id + "?namespace=default").body);
  return j.is_object() && j.contains("actor") ? j["actor"] : nlohmann::json();
}

// Until the engine has the actor asleep (slept, not connectable).
inline bool WaitSleeping(const std::string& base, const std::string& id) {
  return WaitFor([&] {
    auto a = GetActor(base, id);
    return a.is_object() && !a["sleep_ts"].is_null() && a["connectable_ts"].is_null();
  });
}

}  // namespace keel::testing
