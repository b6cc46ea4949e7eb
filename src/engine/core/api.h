// RestApi: the public REST API (actors.md §7) — JSON bodies with snake_case fields, errors
// as {group, code, message, metadata} with the §5.9 statuses, `Authorization: Bearer
// <admin token>` required when the engine has an admin token.
//
// Served: GET /metadata, GET /datacenters, GET|POST /namespaces, GET /runner-configs,
// PUT|DELETE /runner-configs/{name}, GET|POST|PUT /actors, GET /actors/names,
// GET|DELETE /actors/{id}, POST /actors/{id}/sleep, POST /actors/{id}/reschedule,
// GET /actors/{id}/kv/keys/{key}, GET /envoys; every listing is paged by `limit` and
// `cursor`. Handlers run on the worker pool (they read storage); the answer goes back
// through the exchange.
// Thread-safety: Handle may be called from any thread.
#pragma once

#include <memory>
#include <string_view>

#include "net/http_server.h"

namespace keel::engine {

class Engine;

class RestApi {
 public:
  explicit RestApi(Engine& engine);
  // `target`: the request target in origin-form (gateway::OriginFormTarget of the one
  // received); anything else is answered 400 api.bad_request.
  void Handle(std::shared_ptr<net::HttpExchange> exchange, std::string_view target);

 private:
  Engine& engine_;
};

}  // namespace keel::engine
