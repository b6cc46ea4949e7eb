// drain_on_version_upgrade (actors.md §6.11): when an envoy of a newer version connects to a
// pool that drains on upgrade (the API default), the older envoys get no new actors and
// their actors move to the newer one (Stop{GOING_AWAY}, then a start there).
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "net/client.h"
#include "support/fake_envoy.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
namespace v = ::keel::protocol::envoy::latest;

TEST(EnvoyVersionDrain, NewerVersionTakesOverTheOlderEnvoysActors) {
  TestEngine te;
  FakeEnvoyOptions old_options;
  old_options.ws_url = te.ws_url();
  old_options.envoy_key = "envoy-v1";
  old_options.version = 1;
  auto old_envoy = FakeEnvoy::ConnectAndInit(old_options);
  ASSERT_TRUE(old_envoy.has_value()) << old_envoy.error().ToString();

  net::HttpRequest req;
  req.method = "POST";
  req.body = R"({"name":"worker","key":"w1"})";
  auto created = net::FetchSync(te.http_url() + "/actors?namespace=default", std::move(req), 10s);
  ASSERT_TRUE(created.has_value() && created->status == 200);
  const std::string id = nlohmann::json::parse(created->body)["actor"]["actor_id"];
  auto start = (*old_envoy)->WaitCommand(id, 5s);
  ASSERT_TRUE(start.has_value());
  ASSERT_TRUE((*old_envoy)->SendRunning(id, 1).has_value());

  FakeEnvoyOptions new_options = old_options;
  new_options.envoy_key = "envoy-v2";
  new_options.version = 2;
  auto new_envoy = FakeEnvoy::ConnectAndInit(new_options);
  ASSERT_TRUE(new_envoy.has_value());

  auto stop = (*old_envoy)->WaitCommand(id, 5s);
  ASSERT_TRUE(stop.has_value()) << stop.error().ToString();
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  EXPECT_EQ(std::get<v::CommandStopActor>(stop->inner.value).reason,
            v::StopActorReason::kGoingAway);
  ASSERT_TRUE((*old_envoy)->SendStopped(id, 1).has_value());

  auto moved = (*new_envoy)->WaitCommand(id, 5s);
  ASSERT_TRUE(moved.has_value()) << moved.error().ToString();
  ASSERT_TRUE(moved->inner.is<v::CommandStartActor>());
  EXPECT_EQ(moved->checkpoint.generation, 2u);
}

}  // namespace
}  // namespace keel::testing
