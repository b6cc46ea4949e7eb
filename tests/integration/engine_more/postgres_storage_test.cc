// keel-engine with its storage in PostgreSQL (`--storage postgresql://…`, docs/engine.md
// "Storage in PostgreSQL"), through EngineServer::Start as keel-engine's main runs it, against
// a throwaway server (support/postgres_cluster.h): what the engine writes is there for the
// next engine on the database; one engine per table, a second one waits for the table's lock
// and then gives up with storage.failed_precondition, or gets in when the first stops; the
// database URL's password shows in no log line and no error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "engine/common/config.h"
#include "engine/server/server.h"
#include "net/client.h"
#include "support/postgres_admin.h"
#include "support/postgres_cluster.h"

namespace keel::engine {
namespace {

using namespace std::chrono_literals;
using keel::testing::AdminConnection;
using keel::testing::PostgresCluster;

// Every log line, whatever its level.
class LogLines : public LogSink {
 public:
  void Write(LogLevel, std::string_view component, std::string_view message) override {
    std::lock_guard lock(mu_);
    lines_.push_back(std::string(component) + ": " + std::string(message));
  }
  bool Saw(std::string_view part) {
    std::lock_guard lock(mu_);
    for (const auto& line : lines_) {
      if (line.find(part) != std::string::npos) return true;
    }
    return false;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

class EnginePostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = PostgresCluster::Start();
    ASSERT_TRUE(started.has_value()) << started.error().ToString();
    cluster_ = std::move(*started);
    SetLogSink(&log_);
    SetLogLevel(LogLevel::kInfo);
  }
  void TearDown() override { SetLogSink(nullptr); }

  // The cluster trusts every local connection, so the password is carried and never needed:
  // it is there to be looked for in the logs.
  std::string Url() const {
    std::string uri = cluster_->uri();  // postgresql:///postgres?host=…
    return "postgresql://postgres:" + std::string(kPassword) + "@" + uri.substr(13);
  }
  EngineConfig Config(std::chrono::milliseconds lock_wait) const {
    EngineConfig config;
    config.port = 0;
    config.io_spin_us = 0;
    config.storage = StorageKind::kPostgres;
    config.postgres_url = Url();
    config.storage_lock_wait_ms = lock_wait.count();
    return config;
  }
  void ExpectNoPasswordLogged() {
    for (const auto& line : log_.lines()) {
      EXPECT_EQ(line.find(kPassword), std::string::npos) << line;
    }
  }

  static constexpr std::string_view kPassword = "pw-4711-secret";
  std::unique_ptr<PostgresCluster> cluster_;
  LogLines log_;
};

net::HttpResponse Fetch(const EngineServer& server, const std::string& method,
                        const std::string& target, const std::string& body = "") {
  net::HttpRequest req;
  req.method = method;
  req.body = body;
  if (!body.empty()) req.headers.push_back({"content-type", "application/json"});
  auto r = net::FetchSync("http://127.0.0.1:" + std::to_string(server.port()) + target,
                          std::move(req), 10s);
  EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.error().ToString());
  return r.has_value() ? *r : net::HttpResponse{};
}

TEST_F(EnginePostgresTest, WhatOneEngineWritesTheNextFindsInTheDatabase) {
  std::string id;
  {
    auto first = EngineServer::Start(Config(0ms));
    ASSERT_TRUE(first.has_value()) << first.error().ToString();
    auto created =
        Fetch(**first, "POST", "/actors?namespace=default", R"({"name":"counter","key":"pg-1"})");
    ASSERT_EQ(created.status, 200) << created.body;
    id = nlohmann::json::parse(created.body)["actor"]["actor_id"].get<std::string>();
    ASSERT_FALSE(id.empty());
  }
  // A fresh engine on the same database: the actor, its key and its name are there.
  auto second = EngineServer::Start(Config(0ms));
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  auto listed = Fetch(**second, "GET", "/actors?namespace=default&name=counter&key=pg-1");
  ASSERT_EQ(listed.status, 200) << listed.body;
  auto actors = nlohmann::json::parse(listed.body)["actors"];
  ASSERT_EQ(actors.size(), 1u) << listed.body;
  EXPECT_EQ(actors[0]["actor_id"], id);
  EXPECT_TRUE(log_.Saw("storage is a PostgreSQL database"));
  ExpectNoPasswordLogged();
}

TEST_F(EnginePostgresTest, ASecondEngineOnTheTableWaitsThenRefusesToStart) {
  auto first = EngineServer::Start(Config(0ms));
  ASSERT_TRUE(first.has_value()) << first.error().ToString();

  auto at_once = EngineServer::Start(Config(0ms));
  ASSERT_FALSE(at_once.has_value());
  EXPECT_TRUE(at_once.error().Is("storage", "failed_precondition")) << at_once.error().ToString();
  EXPECT_NE(at_once.error().message().find("PostgreSQL at postgresql://"), std::string::npos)
      << at_once.error().ToString();
  EXPECT_EQ(at_once.error().ToString().find(kPassword), std::string::npos)
      << at_once.error().ToString();
  EXPECT_FALSE(log_.Saw("locked by another session; waiting"));

  auto after_a_wait = EngineServer::Start(Config(300ms));
  ASSERT_FALSE(after_a_wait.has_value());
  EXPECT_TRUE(after_a_wait.error().Is("storage", "failed_precondition"))
      << after_a_wait.error().ToString();
  EXPECT_TRUE(log_.Saw("locked by another session; waiting"));

  // The first engine was never disturbed.
  EXPECT_EQ(Fetch(**first, "GET", "/actors?namespace=default&name=counter").status, 200);
  ExpectNoPasswordLogged();
}

TEST_F(EnginePostgresTest, AWaitingEngineStartsOnceTheFirstStops) {
  auto first = EngineServer::Start(Config(0ms));
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto second = std::async(std::launch::async, [this] { return EngineServer::Start(Config(60s)); });
  // Stop the first engine once the second one waits for the table (a poll on its log line,
  // bounded: not a synchronisation by sleeping).
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!log_.Saw("locked by another session; waiting") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(log_.Saw("locked by another session; waiting"));
  first->reset();
  auto started = second.get();
  ASSERT_TRUE(started.has_value()) << started.error().ToString();
  EXPECT_EQ(Fetch(**started, "GET", "/actors?namespace=default&name=counter").status, 200);
  ExpectNoPasswordLogged();
}

// A database restart (a failover, an upgrade) drops every connection the engine holds; the
// engine's next requests reconnect rather than fail for good.
TEST_F(EnginePostgresTest, TheEngineCarriesOnAfterTheDatabaseRestarts) {
  auto server = EngineServer::Start(Config(0ms));
  ASSERT_TRUE(server.has_value()) << server.error().ToString();
  auto before =
      Fetch(**server, "POST", "/actors?namespace=default", R"({"name":"counter","key":"r-1"})");
  ASSERT_EQ(before.status, 200) << before.body;

  ASSERT_TRUE(cluster_->Restart().has_value());

  // The first request after the restart may meet a dead pooled connection (answered as a
  // storage error, never as success); within a few tries the engine has reconnected.
  net::HttpResponse after;
  int failed = 0;
  for (; failed < 5; ++failed) {
    after =
        Fetch(**server, "POST", "/actors?namespace=default", R"({"name":"counter","key":"r-2"})");
    if (after.status == 200) break;
    EXPECT_GE(after.status, 500) << after.body;
  }
  ASSERT_EQ(after.status, 200) << after.body;
  std::printf("%d request(s) failed before the engine reconnected\n", failed);
  auto listed = Fetch(**server, "GET", "/actors?namespace=default&name=counter");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(nlohmann::json::parse(listed.body)["actors"].size(), 2u) << listed.body;
  // The restart released the table's lock with the engine's sessions; its commit since took
  // it again, so the table is still the one engine's.
  auto intruder = EngineServer::Start(Config(0ms));
  ASSERT_FALSE(intruder.has_value());
  EXPECT_TRUE(intruder.error().Is("storage", "failed_precondition")) << intruder.error().ToString();
  ExpectNoPasswordLogged();
}

// The server ended the engine's lock session (an operator, or a partition the server gave
// up on) and a second engine took the table. The first engine's next write finds that
// out: it applies nothing, the engine reports the loss (keel-engine then stops and exits
// 1), and every later write fails too; the second engine has all that was acknowledged.
TEST_F(EnginePostgresTest, AnEngineWhoseTableWasTakenOverWritesNothingMore) {
  std::promise<std::string> lost;
  auto first = EngineServer::Start(Config(0ms), [&lost](const Error& error) {
    lost.set_value(error.ToString());  // called once
  });
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto before =
      Fetch(**first, "POST", "/actors?namespace=default", R"({"name":"counter","key":"t-1"})");
  ASSERT_EQ(before.status, 200) << before.body;

  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  EXPECT_GE(admin.Terminate("pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                            "AND granted)"),
            1);
  auto second = EngineServer::Start(Config(10s));
  ASSERT_TRUE(second.has_value()) << second.error().ToString();

  auto refused =
      Fetch(**first, "POST", "/actors?namespace=default", R"({"name":"counter","key":"t-2"})");
  EXPECT_GE(refused.status, 500) << refused.body;
  auto report = lost.get_future();
  ASSERT_EQ(report.wait_for(10s), std::future_status::ready);
  const std::string error = report.get();
  EXPECT_NE(error.find("storage.failed_precondition"), std::string::npos) << error;
  EXPECT_TRUE(log_.Saw("another engine took over this engine's table"));
  auto again =
      Fetch(**first, "POST", "/actors?namespace=default", R"({"name":"counter","key":"t-3"})");
  EXPECT_GE(again.status, 500) << again.body;

  auto created =
      Fetch(**second, "POST", "/actors?namespace=default", R"({"name":"counter","key":"t-4"})");
  EXPECT_EQ(created.status, 200) << created.body;
  auto listed = Fetch(**second, "GET", "/actors?namespace=default&name=counter");
  ASSERT_EQ(listed.status, 200) << listed.body;
  std::vector<std::string> keys;
  const auto actors = nlohmann::json::parse(listed.body)["actors"];
  for (const auto& actor : actors) {
    keys.push_back(actor["key"].get<std::string>());
  }
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"t-1", "t-4"}));

  // Its stop leaves the table's open marker to the new owner, and says so without a warning
  // that its next start would skip generations: it has no next start on this table.
  first->reset();
  EXPECT_TRUE(log_.Saw("the store is another engine's now"));
  EXPECT_FALSE(log_.Saw("could not mark the store as cleanly closed"));
  ExpectNoPasswordLogged();
}

TEST_F(EnginePostgresTest, NoServerThereIsAnIoErrorWithoutThePassword) {
  EngineConfig config = Config(0ms);
  config.postgres_url =
      "postgresql://keel:" + std::string(kPassword) + "@/keel?host=/nonexistent-keel-dir";
  auto server = EngineServer::Start(config);
  ASSERT_FALSE(server.has_value());
  EXPECT_TRUE(server.error().Is("storage", "io")) << server.error().ToString();
  EXPECT_EQ(server.error().ToString().find(kPassword), std::string::npos)
      << server.error().ToString();
  EXPECT_NE(server.error().message().find("/nonexistent-keel-dir"), std::string::npos)
      << server.error().ToString();
  ExpectNoPasswordLogged();
}

}  // namespace
}  // namespace keel::engine
