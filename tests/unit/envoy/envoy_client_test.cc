// EnvoyClient, the sans-I/O envoy core (envoy-protocol.md §3–§6), driven by hand through
// the fixture in envoy_client_fixture.h (fake transport, recording host, ManualClock). The
// SQLite request paths are tested in envoy_sqlite_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "unit/envoy/envoy_client_fixture.h"

namespace keel::envoy {
namespace {

using namespace ::keel::envoy::test;

// ---- connection ---------------------------------------------------------------------------

TEST_F(EnvoyClientTest, ConnectUrlAndSubprotocolsPerVersionAndToken) {
  for (uint16_t version : {2, 3, 4}) {
    EnvoyConfig c;
    c.endpoint = "https://api.example.com/";
    c.envoy_key = "key-1";
    c.namespace_name = "my ns";
    c.pool_name = "pool";
    c.version = 7;
    c.protocol_version = version;
    Make(c);
    EXPECT_EQ(client_->ConnectUrl(),
              "wss://api.example.com/envoys/connect?protocol_version=" + std::to_string(version) +
                  "&namespace=my%20ns&envoy_key=key-1&version=7&pool_name=pool");
    EXPECT_EQ(client_->Subprotocols(), std::vector<std::string>{"rivet"});
    EXPECT_EQ(client_->protocol_version(), version);
  }
  EnvoyConfig c;
  c.token = "secret";
  Make(c);
  EXPECT_EQ(client_->Subprotocols(), (std::vector<std::string>{"rivet", "rivet_token.secret"}));
  client_->Start();
  ASSERT_EQ(transport_.connects.size(), 1u);
  EXPECT_EQ(transport_.connects[0].url, client_->ConnectUrl());
  EXPECT_EQ(transport_.connects[0].subprotocols, client_->Subprotocols());
  EXPECT_EQ(transport_.connects[0].url,
            "ws://127.0.0.1:6420/envoys/connect?protocol_version=4&namespace=default"
            "&envoy_key=test-envoy&version=1&pool_name=default");
}

TEST_F(EnvoyClientTest, EmptyEnvoyKeyIsRandomAndValid) {
  random_key_ = true;
  Make();
  const std::string key = client_->envoy_key();
  EXPECT_EQ(key.size(), 24u);
  for (char ch : key) EXPECT_TRUE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z')) << key;
  Random other(8);
  EnvoyClient second(EnvoyConfig{}, clock_, other, transport_, host_);
  EXPECT_NE(second.envoy_key(), key);
}

TEST_F(EnvoyClientTest, MetadataIsTheFirstFrame) {
  EnvoyConfig c;
  c.actor_names = {{"counter", R"({"a":1})"}};
  c.metadata_json = R"({"rivetkit":{"version":"1"}})";
  Make(c);
  client_->Start();
  EXPECT_TRUE(transport_.sent.empty());
  client_->OnOpen();
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  const auto* md = sent[0].get_if<v::ToRivetMetadata>();
  ASSERT_NE(md, nullptr);
  ASSERT_TRUE(md->prepopulate_actor_names.has_value());
  ASSERT_EQ(md->prepopulate_actor_names->size(), 1u);
  EXPECT_EQ((*md->prepopulate_actor_names)[0].first, "counter");
  EXPECT_EQ((*md->prepopulate_actor_names)[0].second.metadata, R"({"a":1})");
  EXPECT_EQ(md->metadata, c.metadata_json);
  EXPECT_FALSE(client_->connected());
  Init();
  EXPECT_TRUE(client_->connected());
  EXPECT_TRUE(client_->started());
  EXPECT_EQ(host_.connected, 1);
  ASSERT_TRUE(client_->protocol_metadata().has_value());
  EXPECT_EQ(client_->protocol_metadata()->actor_stop_threshold, 30000);
}

TEST_F(EnvoyClientTest, MetadataActorNamesAlwaysPresentEvenWhenEmpty) {
  Make();
  client_->Start();
  client_->OnOpen();
  auto md = SentOf<v::ToRivetMetadata>();
  ASSERT_EQ(md.size(), 1u);
  ASSERT_TRUE(md[0].prepopulate_actor_names.has_value());
  EXPECT_TRUE(md[0].prepopulate_actor_names->empty());
  EXPECT_FALSE(md[0].metadata.has_value());
}

TEST_F(EnvoyClientTest, PingIsAnsweredWithTheSameTimestamp) {
  Connect();
  Deliver(v::ToEnvoyPing{123456789});
  auto pongs = SentOf<v::ToRivetPong>();
  ASSERT_EQ(pongs.size(), 1u);
  EXPECT_EQ(pongs[0].ts, 123456789);
}

TEST_F(EnvoyClientTest, MalformedFrameIsIgnored) {
  Connect();
  const Bytes junk = {0xff, 0x01, 0x02};
  client_->OnFrame(junk);
  EXPECT_EQ(client_->malformed_frames(), 1u);
  EXPECT_TRUE(transport_.sent.empty());
  Deliver(v::ToEnvoyPing{5});  // still working
  EXPECT_EQ(SentOf<v::ToRivetPong>().size(), 1u);
}

TEST_F(EnvoyClientTest, FramesBeforeOpenOrAfterCloseAreIgnored) {
  Make();
  client_->Start();
  Deliver(v::ToEnvoyPing{1});
  EXPECT_TRUE(transport_.sent.empty());
  client_->OnOpen();
  client_->OnClosed(1006, "");
  transport_.sent.clear();
  Deliver(v::ToEnvoyPing{2});
  EXPECT_TRUE(transport_.sent.empty());
}

// ---- reconnect ----------------------------------------------------------------------------

TEST_F(EnvoyClientTest, ReconnectBackoffDoublesWithJitterAndCaps) {
  EnvoyConfig c;
  c.default_lost_threshold = std::chrono::hours(10);  // keep the lost timer out of the way
  Make(c);
  client_->Start();
  const std::vector<std::pair<int64_t, int64_t>> expected = {
      {1000, 1250},   {2000, 2500},   {4000, 5000},  {8000, 10000},
      {16000, 20000}, {30000, 37500}, {30000, 37500}};
  for (const auto& [lo, hi] : expected) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(DropAndReconnect());
    EXPECT_GE(waited.count(), lo);
    EXPECT_LE(waited.count(), hi);
  }
  EXPECT_EQ(transport_.connects.size(), expected.size() + 1);
}

TEST_F(EnvoyClientTest, BackoffResetsAfterAStableMinuteMeasuredFromBeforeConnect) {
  EnvoyConfig c;
  c.default_lost_threshold = std::chrono::hours(10);
  Make(c);
  client_->Start();
  DropAndReconnect();  // 1 s
  DropAndReconnect();  // 2 s
  // This connection attempt started when the timer fired; 60 s later (handshake time
  // included) it counts as stable.
  client_->OnOpen();
  clock_.Advance(60s);
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(DropAndReconnect());
  EXPECT_GE(waited.count(), 1000);
  EXPECT_LE(waited.count(), 1250);
  // A short connection does not reset: the next delay doubles again.
  client_->OnOpen();
  clock_.Advance(59s);
  waited = std::chrono::duration_cast<std::chrono::milliseconds>(DropAndReconnect());
  EXPECT_GE(waited.count(), 2000);
  EXPECT_LE(waited.count(), 2500);
}

TEST_F(EnvoyClientTest, EvictionStopsReconnectingAndEndsTheClient) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  std::optional<Result<v::KvResponseData>> kv;
  client_->SendKv("a1", KvGet("k"), [&](Result<v::KvResponseData> r) { kv = std::move(r); });
  client_->OnClosed(1000, "ws.eviction#ray123");
  EXPECT_TRUE(client_->shut_down());
  EXPECT_EQ(host_.shutdowns, 1);
  EXPECT_EQ(host_.disconnected, 1);
  // Written to the evicted socket: it may have been applied, as at any other close.
  ASSERT_TRUE(kv.has_value());
  ASSERT_FALSE(kv->has_value());
  EXPECT_TRUE(kv->error().Is("envoy", "kv_indeterminate")) << kv->error().ToString();
  clock_.Advance(std::chrono::hours(1));
  EXPECT_EQ(transport_.connects.size(), 1u);
  EXPECT_TRUE(transport_.closes.empty());  // the socket is already gone
}

TEST_F(EnvoyClientTest, OtherCloseReasonsReconnect) {
  Connect();
  for (const std::string reason : {"ws.going_away#x", "garbage", "", "ws.timed_out"}) {
    const size_t before = transport_.connects.size();
    DropAndReconnect(reason);
    EXPECT_EQ(transport_.connects.size(), before + 1) << reason;
    client_->OnOpen();
  }
  EXPECT_FALSE(client_->shut_down());
}

// ---- lost timer ---------------------------------------------------------------------------

TEST_F(EnvoyClientTest, LostTimerStopsActorsAsLostAndFailsKv) {
  Connect(/*lost_threshold_ms=*/5000);
  Commands({StartCmd("a1", 1, 1), StartCmd("a2", 3, 1)});
  ASSERT_EQ(host_.starts.size(), 2u);
  client_->OnClosed(1006, "");
  std::optional<Result<v::KvResponseData>> kv;
  client_->SendKv("a1", KvGet("k"), [&](Result<v::KvResponseData> r) { kv = std::move(r); });
  // Reconnect attempts keep failing; they do not restart the timer.
  clock_.Advance(4000ms);
  client_->OnClosed(1006, "connect failed");
  EXPECT_TRUE(host_.stops.empty());
  clock_.Advance(1000ms);
  ASSERT_EQ(host_.stops.size(), 2u);
  EXPECT_EQ(host_.stops[0], std::make_tuple(std::string("a1"), 1u, v::StopActorReason::kLost));
  EXPECT_EQ(host_.stops[1], std::make_tuple(std::string("a2"), 3u, v::StopActorReason::kLost));
  EXPECT_EQ(client_->hosted_actors(), 0u);
  ASSERT_TRUE(kv.has_value());
  ASSERT_FALSE(kv->has_value());
  EXPECT_TRUE(kv->error().Is("envoy", "lost"));
  EXPECT_FALSE(client_->shut_down());
}

TEST_F(EnvoyClientTest, NewInitCancelsTheLostTimer) {
  Connect(5000);
  Commands({StartCmd("a1", 1, 1)});
  client_->OnClosed(1006, "");
  clock_.Advance(1500ms);  // reconnect fired
  ASSERT_EQ(transport_.connects.size(), 2u);
  client_->OnOpen();
  Init(5000);
  clock_.Advance(60s);
  EXPECT_TRUE(host_.stops.empty());
  EXPECT_EQ(client_->hosted_actors(), 1u);
}

TEST_F(EnvoyClientTest, LostTimerUsesTheDefaultBeforeTheFirstInit) {
  Make();
  client_->Start();
  client_->OnClosed(1006, "refused");
  // No actors, but the timer still runs; nothing to observe except that it does not crash
  // and pending KV fails at 10 s.
  std::optional<Result<v::KvResponseData>> kv;
  client_->SendKv("a1", KvGet("k"), [&](Result<v::KvResponseData> r) { kv = std::move(r); });
  clock_.Advance(9999ms);
  EXPECT_FALSE(kv.has_value());
  clock_.Advance(1ms);
  ASSERT_TRUE(kv.has_value());
  EXPECT_TRUE(kv->error().Is("envoy", "lost"));
}

// ---- commands -----------------------------------------------------------------------------

TEST_F(EnvoyClientTest, StartCommandReachesTheHost) {
  Connect();
  v::CommandStartActor start;
  start.config.name = "counter";
  start.config.key = "k";
  start.hibernating_requests.push_back(v::HibernatingRequest{{1, 2, 3, 4}, {5, 6, 7, 8}});
  start.preloaded_kv = v::PreloadedKv{};
  Commands({v::CommandWrapper{v::ActorCheckpoint{"a1", 2, 1}, v::Command{start}}});
  ASSERT_EQ(host_.starts.size(), 1u);
  const StartActor& s = host_.starts[0];
  EXPECT_EQ(s.actor_id, "a1");
  EXPECT_EQ(s.generation, 2u);
  EXPECT_EQ(s.command_index, 1);
  EXPECT_EQ(s.config, start.config);
  EXPECT_EQ(s.hibernating_requests, start.hibernating_requests);
  EXPECT_TRUE(s.preloaded_kv.has_value());
  EXPECT_EQ(client_->hosted_actors(), 1u);
}

TEST_F(EnvoyClientTest, ReplayedCommandsAreDroppedPerActorGeneration) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  Commands({StopCmd("a1", 1, 5)});
  ASSERT_EQ(host_.stops.size(), 1u);
  // CD-1: the same index and a lower one are replays.
  Commands({StartCmd("a1", 1, 1), StopCmd("a1", 1, 5), StopCmd("a1", 1, 3)});
  EXPECT_EQ(host_.starts.size(), 1u);
  EXPECT_EQ(host_.stops.size(), 1u);
  EXPECT_EQ(client_->duplicate_commands(), 3u);
  // CD-2: another generation and another actor are not deduplicated.
  Commands({StartCmd("a1", 2, 1), StartCmd("a2", 1, 1)});
  EXPECT_EQ(host_.starts.size(), 3u);
  // The stopped generation is removed but its dedup entry survives: a replayed start
  // does not resurrect it.
  client_->ActorStopped("a1", 1);
  Commands({StartCmd("a1", 1, 1)});
  EXPECT_EQ(host_.starts.size(), 3u);
}

// The dedup entries of generations no longer hosted live in one flat table (no allocation
// per slept actor, BENCHMARKS W4): many of them, some moving into hosted actors in any order,
// long ids included, keep answering exactly.
TEST_F(EnvoyClientTest, DedupEntriesOfUnhostedGenerationsStayExactAtScale) {
  Connect();
  const int n = 500;
  auto id = [](int i) {
    return i % 5 == 0 ? "an-actor-id-too-long-for-the-inline-key-" + std::to_string(i)
                      : "act" + std::to_string(i * 7919) + "-0123456789abcdefghij";
  };
  // A stop for a generation that is not hosted records its index.
  for (int i = 0; i < n; ++i) Commands({StopCmd(id(i), 1, 2)});
  EXPECT_EQ(client_->dedup_entries(), size_t{n});
  EXPECT_TRUE(host_.stops.empty());
  // Every third generation starts after all (a higher index): its entry moves to the actor.
  for (int i = 0; i < n; i += 3) Commands({StartCmd(id(i), 1, 3)});
  const size_t started = host_.starts.size();
  ASSERT_EQ(started, size_t{(n + 2) / 3});
  EXPECT_EQ(client_->dedup_entries(), n - started);
  EXPECT_EQ(client_->actor_entries(), started);
  // Replays are dropped, wherever their entry lives.
  uint64_t dup = client_->duplicate_commands();
  for (int i = 0; i < n; ++i) Commands({StopCmd(id(i), 1, 2), StartCmd(id(i), 1, i % 3 == 0 ? 3 : 1)});
  EXPECT_EQ(client_->duplicate_commands(), dup + 2 * n);
  EXPECT_EQ(host_.starts.size(), started);
  EXPECT_TRUE(host_.stops.empty());
  // New indexes go through; stopped generations keep their entry (§4.4).
  for (int i = 0; i < n; i += 3) Commands({StopCmd(id(i), 1, 4)});
  ASSERT_EQ(host_.stops.size(), started);
  for (int i = 0; i < n; i += 3) client_->ActorStopped(id(i), 1);
  EXPECT_EQ(client_->actor_entries(), 0u);
  EXPECT_EQ(client_->dedup_entries(), size_t{n});
  dup = client_->duplicate_commands();
  for (int i = 0; i < n; ++i) Commands({StartCmd(id(i), 1, 1)});
  EXPECT_EQ(client_->duplicate_commands(), dup + n);
  EXPECT_EQ(host_.starts.size(), started);
}

TEST_F(EnvoyClientTest, StopForUnknownActorIsIgnored) {
  Connect();
  Commands({StopCmd("ghost", 1, 2)});
  EXPECT_TRUE(host_.stops.empty());
  EXPECT_TRUE(transport_.sent.empty());
}

TEST_F(EnvoyClientTest, AckCommandsTimerListsHostedActorsAndClearsDedupOnSend) {
  EnvoyConfig c;
  c.ack_commands_interval = 1000ms;
  Make(c);
  Connect();
  clock_.Advance(1000ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());  // nothing hosted: nothing sent
  Commands({StartCmd("a1", 1, 1), StartCmd("b1", 4, 7)});
  Commands({StopCmd("b1", 4, 9)});
  clock_.Advance(1000ms);
  auto acks = SentOf<v::ToRivetAckCommands>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].last_command_checkpoints,
            (std::vector<v::ActorCheckpoint>{{"a1", 1, 1}, {"b1", 4, 9}}));
  transport_.sent.clear();
  // Dedup entries went with the ack: the engine no longer replays those commands.
  Commands({StopCmd("a1", 1, 1)});
  EXPECT_EQ(host_.stops.size(), 2u);

  // Without a socket the ack is skipped and the dedup state kept.
  Commands({StartCmd("c1", 1, 1)});
  client_->OnClosed(1006, "");
  clock_.Advance(1000ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
  client_->OnOpen();
  Init();
  Commands({StartCmd("c1", 1, 1)});
  EXPECT_EQ(host_.starts.size(), 3u);  // a1, b1, c1 once
}

// The periodic ack of many hosted actors goes out in bounded messages too: one message for
// all of them would pass the engine's message limit at a few hundred thousand actors.
TEST_F(EnvoyClientTest, PeriodicAckOfManyHostedActorsIsBatched) {
  EnvoyConfig c;
  c.ack_commands_interval = 1000ms;
  Make(c);
  Connect();
  const int n = 1500;
  for (int i = 0; i < n; ++i) Commands({StartCmd("act" + std::to_string(i), 1, i + 1)});
  ASSERT_EQ(client_->hosted_actors(), size_t{n});
  clock_.Advance(1000ms);
  auto acks = SentOf<v::ToRivetAckCommands>();
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[0].last_command_checkpoints.size(), 1024u);
  EXPECT_EQ(acks[1].last_command_checkpoints.size(), size_t{n - 1024});
  std::map<std::string, int64_t> seen;
  for (const auto& ack : acks) {
    for (const auto& cp : ack.last_command_checkpoints) seen[cp.actor_id] = cp.index;
  }
  ASSERT_EQ(seen.size(), size_t{n});
  for (int i = 0; i < n; ++i) EXPECT_EQ(seen["act" + std::to_string(i)], i + 1);
}

// Generations no longer hosted are acknowledged on their own, a delay after they stopped,
// and their dedup entries then forgotten — otherwise every actor that ever slept would keep
// one for the life of the process (§4.3 acks hosted generations only).
TEST_F(EnvoyClientTest, StoppedGenerationsAreAckedAfterTheDelayAndForgotten) {
  Connect();
  Commands({StartCmd("a1", 1, 1), StartCmd("b1", 3, 1)});
  Commands({StopCmd("a1", 1, 2)});
  client_->ActorStopped("a1", 1);
  Commands({StopCmd("ghost", 7, 4)});  // a generation never hosted here
  EXPECT_EQ(client_->dedup_entries(), 2u);
  clock_.Advance(999ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
  // Until the ack, replays are still dropped.
  Commands({StartCmd("a1", 1, 1)});
  EXPECT_EQ(host_.starts.size(), 2u);
  clock_.Advance(1ms);
  auto acks = SentOf<v::ToRivetAckCommands>();
  ASSERT_EQ(acks.size(), 1u);
  auto listed = acks[0].last_command_checkpoints;
  std::sort(listed.begin(), listed.end(),
            [](const auto& a, const auto& b) { return a.actor_id < b.actor_id; });
  // The hosted b1 is not in it: its dedup entry stays with its instance.
  EXPECT_EQ(listed, (std::vector<v::ActorCheckpoint>{{"a1", 1, 2}, {"ghost", 7, 4}}));
  EXPECT_EQ(client_->dedup_entries(), 0u);
  EXPECT_EQ(client_->released_dedup_entries(), 2u);
  EXPECT_EQ(client_->hosted_actors(), 1u);
  // Nothing left: no more acks.
  transport_.sent.clear();
  clock_.Advance(5000ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
}

// Without a socket the entries stay. After a reconnect the ack waits a whole delay from the
// Init, so the commands the engine replays behind its Init still meet their entries.
TEST_F(EnvoyClientTest, StoppedGenerationsOutliveADisconnectAndTheReplay) {
  EnvoyConfig c;
  c.backoff_initial = 100ms;  // reconnects 100 ms after a drop, every time
  c.backoff_max = 100ms;
  c.backoff_jitter = 0;
  Make(c);
  Connect();
  Commands({StartCmd("a1", 1, 1), StopCmd("a1", 1, 2)});
  client_->ActorStopped("a1", 1);
  client_->OnClosed(1006, "");
  clock_.Advance(3000ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
  EXPECT_EQ(client_->dedup_entries(), 1u);
  client_->OnOpen();
  Init();
  // Another drop half a delay later: the ack counts from the newest Init.
  clock_.Advance(500ms);
  client_->OnClosed(1006, "");
  clock_.Advance(100ms);  // the reconnect
  client_->OnOpen();
  Init();
  clock_.Advance(999ms);
  Commands({StartCmd("a1", 1, 1), StopCmd("a1", 1, 2)});  // the replay
  EXPECT_EQ(host_.starts.size(), 1u);
  EXPECT_EQ(host_.stops.size(), 1u);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
  clock_.Advance(1ms);
  auto acks = SentOf<v::ToRivetAckCommands>();
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].last_command_checkpoints, (std::vector<v::ActorCheckpoint>{{"a1", 1, 2}}));
  EXPECT_EQ(client_->dedup_entries(), 0u);
}

// Many stopped generations go out in bounded messages, each entry once; a shutdown before
// the delay sends nothing.
TEST_F(EnvoyClientTest, StoppedGenerationAcksAreBatchedAndShutdownCancelsThem) {
  Connect();
  const int n = 2500;
  auto id = [](int i) {
    return i % 7 == 0 ? "an-actor-id-too-long-for-the-inline-key-" + std::to_string(i)
                      : "act" + std::to_string(i) + "-0123456789abcdefghijklmn";
  };
  for (int i = 0; i < n; ++i) Commands({StopCmd(id(i), 2, i + 1)});
  clock_.Advance(1000ms);
  auto acks = SentOf<v::ToRivetAckCommands>();
  ASSERT_EQ(acks.size(), 3u);
  EXPECT_EQ(acks[0].last_command_checkpoints.size(), 1024u);
  EXPECT_EQ(acks[1].last_command_checkpoints.size(), 1024u);
  std::map<std::string, int64_t> seen;
  for (const auto& ack : acks) {
    for (const auto& cp : ack.last_command_checkpoints) {
      EXPECT_EQ(cp.generation, 2u);
      EXPECT_TRUE(seen.emplace(cp.actor_id, cp.index).second) << cp.actor_id;
    }
  }
  ASSERT_EQ(seen.size(), size_t{n});
  for (int i = 0; i < n; ++i) EXPECT_EQ(seen[id(i)], i + 1) << id(i);
  EXPECT_EQ(client_->dedup_entries(), 0u);

  transport_.sent.clear();
  Commands({StopCmd("late", 1, 1)});
  client_->Shutdown(/*immediate=*/true);
  clock_.Advance(5000ms);
  EXPECT_TRUE(SentOf<v::ToRivetAckCommands>().empty());
}

// ---- events -------------------------------------------------------------------------------

TEST_F(EnvoyClientTest, EventIndicesStartAtZeroPerInstanceAndAckPrunesHistory) {
  Connect();
  Commands({StartCmd("a1", 1, 1), StartCmd("a1", 2, 1)});
  client_->ActorRunning("a1", 1);
  client_->RequestSleep("a1", 1);
  client_->ActorRunning("a1", 2);
  client_->RequestStop("a1", 1);
  auto events = SentEvents();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].checkpoint, (v::ActorCheckpoint{"a1", 1, 0}));
  EXPECT_TRUE(events[0].inner.is<v::EventActorStateUpdate>());
  EXPECT_EQ(events[1].checkpoint, (v::ActorCheckpoint{"a1", 1, 1}));
  EXPECT_TRUE(events[1].inner.is<v::EventActorIntent>());
  EXPECT_EQ(events[2].checkpoint, (v::ActorCheckpoint{"a1", 2, 0}));
  EXPECT_EQ(events[3].checkpoint, (v::ActorCheckpoint{"a1", 1, 2}));
  transport_.sent.clear();

  // Ack through index 1 of gen 1: a reconnect resends only the rest, in one message.
  Deliver(v::ToEnvoyAckEvents{{v::ActorCheckpoint{"a1", 1, 1}}});
  client_->OnClosed(1006, "");
  client_->ActorRunning("ghost", 1);  // unknown: dropped
  client_->RequestSleep("a1", 2);     // no socket: kept in history only
  EXPECT_TRUE(transport_.sent.empty());
  clock_.Advance(1500ms);
  client_->OnOpen();
  Init();
  auto batches = SentOf<v::ToRivetEvents>();
  ASSERT_EQ(batches.size(), 1u);
  std::vector<v::ActorCheckpoint> resent;
  for (const auto& w : batches[0].value) resent.push_back(w.checkpoint);
  EXPECT_EQ(resent, (std::vector<v::ActorCheckpoint>{{"a1", 1, 2}, {"a1", 2, 0}, {"a1", 2, 1}}));
}

TEST_F(EnvoyClientTest, StoppedWithErrorCarriesTheMessage) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->ActorStopped("a1", 1, Error("actor", "crashed", "boom"));
  auto events = SentEvents();
  ASSERT_EQ(events.size(), 1u);
  const auto* update = events[0].inner.get_if<v::EventActorStateUpdate>();
  ASSERT_NE(update, nullptr);
  const auto* stopped = update->state.get_if<v::ActorStateStopped>();
  ASSERT_NE(stopped, nullptr);
  EXPECT_EQ(stopped->code, v::StopCode::kError);
  EXPECT_EQ(stopped->message, std::optional<std::string>("actor.crashed: boom"));
  // Stopped on its own (no stop command): no longer hosted, but remembered (command dedup,
  // event history) until the engine's stop.
  EXPECT_EQ(client_->hosted_actors(), 0u);
  Commands({StopCmd("a1", 1, 2)});
  EXPECT_TRUE(host_.stops.empty());
  EXPECT_EQ(SentEvents().size(), 2u) << "the stop is answered with Stopped";
}

TEST_F(EnvoyClientTest, SetAlarmAckFiresOnlyWhenAnAckCoversIt) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->ActorRunning("a1", 1);  // index 0
  std::optional<Status> first, second;
  client_->SetAlarm("a1", 1, 5000, [&](Status s) { first = s; });           // index 1
  client_->SetAlarm("a1", 1, std::nullopt, [&](Status s) { second = s; });  // index 2
  auto events = SentEvents();
  ASSERT_EQ(events.size(), 3u);
  const auto* alarm = events[1].inner.get_if<v::EventActorSetAlarm>();
  ASSERT_NE(alarm, nullptr);
  EXPECT_EQ(alarm->alarm_ts, std::optional<int64_t>(5000));
  Deliver(v::ToEnvoyAckEvents{{v::ActorCheckpoint{"a1", 1, 0}}});
  EXPECT_FALSE(first.has_value());
  Deliver(v::ToEnvoyAckEvents{{v::ActorCheckpoint{"a1", 1, 1}}});
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->has_value());
  EXPECT_FALSE(second.has_value());
  // The instance ends before the second one was acknowledged: it fails.
  Commands({StopCmd("a1", 1, 2)});
  client_->ActorStopped("a1", 1);
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->has_value());
  // Unknown actors fail at once.
  std::optional<Status> ghost;
  client_->SetAlarm("ghost", 1, 1, [&](Status s) { ghost = s; });
  ASSERT_TRUE(ghost.has_value());
  EXPECT_FALSE(ghost->has_value());
}

TEST_F(EnvoyClientTest, SetAlarmAckFailsOnShutdown) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  std::optional<Status> acked;
  client_->SetAlarm("a1", 1, 5000, [&](Status s) { acked = s; });
  client_->Shutdown(/*immediate=*/true);
  ASSERT_TRUE(acked.has_value());
  ASSERT_FALSE(acked->has_value());
  EXPECT_TRUE(acked->error().Is("envoy", "shutdown"));
}

// ---- KV -----------------------------------------------------------------------------------

TEST_F(EnvoyClientTest, KvResponsesMatchByRequestIdWithTwoInFlight) {
  Connect();
  std::vector<std::pair<int, Result<v::KvResponseData>>> done;
  client_->SendKv("a1", KvGet("x"), [&](Result<v::KvResponseData> r) { done.emplace_back(0, r); });
  client_->SendKv("a2", KvGet("y"), [&](Result<v::KvResponseData> r) { done.emplace_back(1, r); });
  auto requests = SentOf<v::ToRivetKvRequest>();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].actor_id, "a1");
  EXPECT_EQ(requests[1].actor_id, "a2");
  EXPECT_NE(requests[0].request_id, requests[1].request_id);
  EXPECT_EQ(client_->pending_kv_requests(), 2u);

  // Answered out of order; an unknown id is ignored.
  Deliver(v::ToEnvoyKvResponse{12345, v::KvResponseData{v::KvPutResponse{}}});
  Deliver(v::ToEnvoyKvResponse{requests[1].request_id,
                               v::KvResponseData{v::KvErrorResponse{"too big"}}});
  Deliver(v::ToEnvoyKvResponse{requests[0].request_id, v::KvResponseData{v::KvGetResponse{}}});
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].first, 1);
  ASSERT_TRUE(done[0].second.has_value());
  EXPECT_TRUE(done[0].second->is<v::KvErrorResponse>());  // returned as a value
  EXPECT_EQ(done[1].first, 0);
  ASSERT_TRUE(done[1].second.has_value());
  EXPECT_TRUE(done[1].second->is<v::KvGetResponse>());
  EXPECT_EQ(client_->pending_kv_requests(), 0u);
  // A late duplicate answer is ignored.
  Deliver(v::ToEnvoyKvResponse{requests[0].request_id, v::KvResponseData{v::KvGetResponse{}}});
  EXPECT_EQ(done.size(), 2u);
}

TEST_F(EnvoyClientTest, KvTimesOutThroughTheSweep) {
  Connect();
  std::optional<Result<v::KvResponseData>> r;
  client_->SendKv("a1", KvGet("x"), [&](Result<v::KvResponseData> x) { r = std::move(x); });
  clock_.Advance(29s);
  EXPECT_FALSE(r.has_value());
  clock_.Advance(16s);  // the sweep after the 30 s deadline
  ASSERT_TRUE(r.has_value());
  ASSERT_FALSE(r->has_value());
  EXPECT_TRUE(r->error().Is("envoy", "kv_timeout"));
  EXPECT_EQ(client_->pending_kv_requests(), 0u);
}

TEST_F(EnvoyClientTest, KvWithoutSocketIsSentOnInitAndSentOnesFailIndeterminate) {
  EnvoyConfig c;
  c.default_lost_threshold = std::chrono::hours(1);
  Make(c);
  Connect(3600 * 1000);
  std::optional<Result<v::KvResponseData>> sent_result;
  client_->SendKv("a1", KvGet("sent"), [&](Result<v::KvResponseData> r) { sent_result = std::move(r); });
  ASSERT_EQ(SentOf<v::ToRivetKvRequest>().size(), 1u);
  client_->OnClosed(1006, "");
  // Its answer died with the socket: it fails at once (Keel; Rivet waits for the 30 s
  // sweep) and is never resent.
  ASSERT_TRUE(sent_result.has_value());
  ASSERT_FALSE(sent_result->has_value());
  EXPECT_TRUE(sent_result->error().Is("envoy", "kv_indeterminate")) << sent_result->error().ToString();
  transport_.sent.clear();
  client_->SendKv("a1", KvGet("first"), [](Result<v::KvResponseData>) {});
  client_->SendKv("a1", KvGet("second"), [](Result<v::KvResponseData>) {});
  EXPECT_TRUE(transport_.sent.empty());
  clock_.Advance(1500ms);
  client_->OnOpen();
  transport_.sent.clear();  // metadata
  Init();
  auto requests = SentOf<v::ToRivetKvRequest>();
  ASSERT_EQ(requests.size(), 2u);
  const auto key = [](const v::ToRivetKvRequest& r) {
    const auto& k = r.data.get_if<v::KvGetRequest>()->keys[0];
    return std::string(k.begin(), k.end());
  };
  EXPECT_EQ(key(requests[0]), "first");
  EXPECT_EQ(key(requests[1]), "second");
  EXPECT_EQ(client_->pending_kv_requests(), 2u);
}

TEST_F(EnvoyClientTest, KvFailsOnShutdown) {
  Connect();
  std::optional<Result<v::KvResponseData>> r;
  client_->SendKv("a1", KvGet("x"), [&](Result<v::KvResponseData> x) { r = std::move(x); });
  client_->Shutdown(/*immediate=*/true);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->error().Is("envoy", "shutdown"));
  std::optional<Result<v::KvResponseData>> late;
  client_->SendKv("a1", KvGet("x"), [&](Result<v::KvResponseData> x) { late = std::move(x); });
  ASSERT_TRUE(late.has_value());
  EXPECT_TRUE(late->error().Is("envoy", "shutdown"));
}

TEST_F(EnvoyClientTest, ProtocolV2CarriesKvButRefusesV4OnlyMessagesCleanly) {
  EnvoyConfig c;
  c.protocol_version = 2;
  Make(c);
  Connect();
  std::optional<Result<v::KvResponseData>> r;
  client_->SendKv("a1", KvGet("x"), [&](Result<v::KvResponseData> x) { r = std::move(x); });
  auto requests = SentOf<v::ToRivetKvRequest>();
  ASSERT_EQ(requests.size(), 1u);
  Deliver(v::ToEnvoyKvResponse{requests[0].request_id, v::KvResponseData{v::KvPutResponse{}}});
  ASSERT_TRUE(r.has_value() && r->has_value());

  transport_.sent.clear();
  // Remote SQL needs v4: a structured "unavailable" carrying the conversion error's text.
  v::SqliteExecRequest exec;
  exec.actor_id = "a1";
  exec.sql = "SELECT 1";
  std::optional<Result<v::SqliteExecResponse>> e;
  client_->SqliteExec(exec, [&](Result<v::SqliteExecResponse> x) { e = std::move(x); });
  ASSERT_TRUE(e.has_value());
  ASSERT_FALSE(e->has_value());
  EXPECT_TRUE(e->error().Is("sqlite", "remote_unavailable")) << e->error().ToString();
  EXPECT_NE(e->error().message().find(
                "remote sqlite requests require envoy-protocol v4 but target version is v2"),
            std::string::npos)
      << e->error().ToString();
  // Stateless page I/O needs v3: the conversion error as is.
  std::optional<Result<v::SqliteGetPagesResponse>> p;
  client_->SqliteGetPages(v::SqliteGetPagesRequest{"a1", {1}, std::nullopt, std::nullopt},
                          [&](Result<v::SqliteGetPagesResponse> x) { p = std::move(x); });
  ASSERT_TRUE(p.has_value());
  ASSERT_FALSE(p->has_value());
  EXPECT_EQ(p->error(), Error("protocol", "incompatible_message",
                              "stateless sqlite requests require envoy-protocol v3"));
  EXPECT_TRUE(transport_.sent.empty());
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
  // The connection is unaffected.
  Deliver(v::ToEnvoyPing{9});
  EXPECT_EQ(SentOf<v::ToRivetPong>().size(), 1u);
}

TEST_F(EnvoyClientTest, KvRequestIdsWrapAndSkipPendingOnes) {
  Connect();
  // Exhausting 2^32 ids is not practical; check the start of the sequence and that
  // answered ids are not reused while others are pending.
  std::vector<uint32_t> ids;
  for (int i = 0; i < 3; ++i) client_->SendKv("a", KvGet("k"), [](Result<v::KvResponseData>) {});
  for (const auto& r : SentOf<v::ToRivetKvRequest>()) ids.push_back(r.request_id);
  EXPECT_EQ(ids, (std::vector<uint32_t>{0, 1, 2}));
}

// ---- tunnel -------------------------------------------------------------------------------

v::ToEnvoyTunnelMessage TunnelIn(uint8_t req, v::ToEnvoyTunnelMessageKind kind,
                                 uint16_t index = 0) {
  v::ToEnvoyTunnelMessage m;
  m.message_id = v::MessageId{{9, 9, 9, 9}, {req, 0, 0, 0}, index};
  m.message_kind = std::move(kind);
  return m;
}

v::ToRivetTunnelMessage TunnelOut(uint8_t req, v::ToRivetTunnelMessageKind kind) {
  v::ToRivetTunnelMessage m;
  m.message_id = v::MessageId{{9, 9, 9, 9}, {req, 0, 0, 0}, 0};
  m.message_kind = std::move(kind);
  return m;
}

TEST_F(EnvoyClientTest, TunnelRoutesByRequestIdAndForgetsOnEnd) {
  Connect();
  Commands({StartCmd("a1", 1, 1), StartCmd("a2", 1, 1)});
  v::ToEnvoyRequestStart start;
  start.actor_id = "a1";
  start.method = "POST";
  start.path = "/x";
  start.stream = true;
  Deliver(TunnelIn(1, start));
  v::ToEnvoyWebSocketOpen open;
  open.actor_id = "a2";
  open.path = "/ws";
  Deliver(TunnelIn(2, open));
  Deliver(TunnelIn(1, v::ToEnvoyRequestChunk{Bytes{1}, true}, 1));
  Deliver(TunnelIn(2, v::ToEnvoyWebSocketMessage{Bytes{7}, true}, 1));
  ASSERT_EQ(host_.tunnel.size(), 4u);
  EXPECT_EQ(host_.tunnel[0].first, "a1");
  EXPECT_EQ(host_.tunnel[1].first, "a2");
  EXPECT_EQ(host_.tunnel[2].first, "a1");
  EXPECT_TRUE(host_.tunnel[2].second.message_kind.is<v::ToEnvoyRequestChunk>());
  EXPECT_EQ(host_.tunnel[3].first, "a2");

  // The final response forgets request 1; the gateway's close forgets request 2.
  client_->SendTunnel(TunnelOut(1, v::ToRivetResponseStart{200, {}, std::nullopt, false}), false);
  EXPECT_EQ(SentOf<v::ToRivetTunnelMessage>().size(), 1u);
  Deliver(TunnelIn(1, v::ToEnvoyRequestAbort{}, 2));
  Deliver(TunnelIn(2, v::ToEnvoyWebSocketClose{1000, std::nullopt}, 2));
  Deliver(TunnelIn(2, v::ToEnvoyWebSocketMessage{Bytes{8}, true}, 3));
  EXPECT_EQ(host_.tunnel.size(), 5u);  // only the close got through
  EXPECT_TRUE(host_.tunnel[4].second.message_kind.is<v::ToEnvoyWebSocketClose>());
  EXPECT_EQ(client_->unroutable_tunnel_messages(), 2u);
}

TEST_F(EnvoyClientTest, TunnelRegisterRequestRoutesRestoredSockets) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->RegisterRequest("a1", {9, 9, 9, 9}, {5, 0, 0, 0});
  Deliver(TunnelIn(5, v::ToEnvoyWebSocketMessage{Bytes{1}, true}, 4));
  ASSERT_EQ(host_.tunnel.size(), 1u);
  EXPECT_EQ(host_.tunnel[0].first, "a1");
  EXPECT_EQ(client_->unroutable_tunnel_messages(), 0u);
}

TEST_F(EnvoyClientTest, TunnelOpenForUnknownActorIsRefusedByTheClient) {
  Connect();
  v::ToEnvoyRequestStart start;
  start.actor_id = "ghost";
  Deliver(TunnelIn(1, start));
  v::ToEnvoyWebSocketOpen open;
  open.actor_id = "ghost";
  Deliver(TunnelIn(2, open, 0));
  EXPECT_TRUE(host_.tunnel.empty());
  auto out = SentOf<v::ToRivetTunnelMessage>();
  ASSERT_EQ(out.size(), 2u);
  const auto* resp = out[0].message_kind.get_if<v::ToRivetResponseStart>();
  ASSERT_NE(resp, nullptr);
  EXPECT_EQ(resp->status, 503);
  const auto* close = out[1].message_kind.get_if<v::ToRivetWebSocketClose>();
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->code, std::optional<uint16_t>(1011));
  EXPECT_EQ(close->reason, std::optional<std::string>("Actor not found"));
}

TEST_F(EnvoyClientTest, BufferedTunnelMessagesSurviveADisconnectOthersAreDropped) {
  Connect();
  client_->OnClosed(1006, "");
  client_->SendTunnel(TunnelOut(1, v::ToRivetWebSocketMessageAck{3}), /*buffered=*/true);
  client_->SendTunnel(TunnelOut(1, v::ToRivetWebSocketMessage{Bytes{1}, true}), false);
  client_->SendTunnel(TunnelOut(2, v::ToRivetWebSocketOpen{true}), /*buffered=*/true);
  clock_.Advance(1500ms);
  client_->OnOpen();
  transport_.sent.clear();
  Init();
  auto out = SentOf<v::ToRivetTunnelMessage>();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].message_kind.is<v::ToRivetWebSocketMessageAck>());
  EXPECT_TRUE(out[1].message_kind.is<v::ToRivetWebSocketOpen>());
  // Sent once only.
  transport_.sent.clear();
  client_->OnClosed(1006, "");
  clock_.Advance(5s);
  client_->OnOpen();
  Init();
  EXPECT_TRUE(SentOf<v::ToRivetTunnelMessage>().empty());
}

// The engine closes the whole envoy connection on a tunnel payload over its
// maxResponsePayloadSize (envoy-protocol.md §6.6): a response body over it goes out as a
// stream of pieces under it, in order, the route forgotten only with the last.
TEST_F(EnvoyClientTest, AResponseBodyOverThePayloadLimitGoesOutStreamedInPieces) {
  Connect(10000, /*max_payload=*/10);
  EXPECT_EQ(client_->max_tunnel_payload(), 10u);
  Commands({StartCmd("a1", 1, 1)});
  v::ToEnvoyRequestStart start;
  start.actor_id = "a1";
  start.method = "GET";
  start.path = "/big";
  Deliver(TunnelIn(1, start));
  ASSERT_EQ(client_->route_entries(), 1u);
  transport_.sent.clear();

  Bytes body(25);
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<uint8_t>(i);
  client_->SendTunnel(
      TunnelOut(1,
                v::ToRivetResponseStart{
                    200, {{"content-type", "application/octet-stream"}}, body, false}),
      false);
  auto out = SentOf<v::ToRivetTunnelMessage>();
  ASSERT_EQ(out.size(), 3u);
  const auto* first = out[0].message_kind.get_if<v::ToRivetResponseStart>();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->status, 200);
  EXPECT_TRUE(first->stream);
  EXPECT_EQ(first->headers.size(), 1u);
  Bytes joined = *first->body;
  EXPECT_EQ(first->body->size(), 10u);
  for (size_t i = 1; i < out.size(); ++i) {
    EXPECT_EQ(out[i].message_id.message_index, i);
    const auto* chunk = out[i].message_kind.get_if<v::ToRivetResponseChunk>();
    ASSERT_NE(chunk, nullptr);
    EXPECT_LE(chunk->body.size(), 10u);
    EXPECT_EQ(chunk->finish, i + 1 == out.size());
    joined.insert(joined.end(), chunk->body.begin(), chunk->body.end());
  }
  EXPECT_EQ(joined, body);
  EXPECT_EQ(client_->route_entries(), 0u) << "the last piece ends the request";

  // A chunk of a stream over the limit: pieces, the stream not ended unless it was.
  transport_.sent.clear();
  client_->SendTunnel(TunnelOut(2, v::ToRivetResponseChunk{Bytes(15, 7), false}), false);
  out = SentOf<v::ToRivetTunnelMessage>();
  ASSERT_EQ(out.size(), 2u);
  for (const auto& m : out) {
    const auto* chunk = m.message_kind.get_if<v::ToRivetResponseChunk>();
    ASSERT_NE(chunk, nullptr);
    EXPECT_FALSE(chunk->finish);
  }
  EXPECT_EQ(out[0].message_kind.get_if<v::ToRivetResponseChunk>()->body.size(), 10u);
  EXPECT_EQ(out[1].message_kind.get_if<v::ToRivetResponseChunk>()->body.size(), 5u);

  // At the limit: one message, untouched.
  transport_.sent.clear();
  client_->SendTunnel(TunnelOut(3, v::ToRivetResponseStart{200, {}, Bytes(10, 1), false}), false);
  out = SentOf<v::ToRivetTunnelMessage>();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].message_kind.get_if<v::ToRivetResponseStart>()->stream);
}

// A WebSocket message cannot be split: one over the limit is dropped (and counted) rather
// than sent to an engine that would close the connection of every actor on it.
TEST_F(EnvoyClientTest, AWebSocketMessageOverThePayloadLimitIsNotSent) {
  Connect(10000, /*max_payload=*/10);
  client_->SendTunnel(TunnelOut(1, v::ToRivetWebSocketMessage{Bytes(11, 1), true}), false);
  EXPECT_TRUE(transport_.sent.empty());
  EXPECT_EQ(client_->oversized_tunnel_messages(), 1u);
  client_->SendTunnel(TunnelOut(1, v::ToRivetWebSocketMessage{Bytes(10, 1), true}), false);
  EXPECT_EQ(SentOf<v::ToRivetTunnelMessage>().size(), 1u);
  EXPECT_TRUE(transport_.closes.empty());
}

// Before any Init the engine's default limit (20 MiB) applies.
TEST_F(EnvoyClientTest, ThePayloadLimitBeforeAnInitIsTheDefault) {
  Make();
  EXPECT_EQ(client_->max_tunnel_payload(), uint64_t{20} << 20);
}

// A request whose frame is over the engine's read limit fails at once with
// envoy.message_too_large; nothing is written and the connection stays up.
TEST_F(EnvoyClientTest, ARequestOverTheFrameLimitFailsWithoutBeingSent) {
  EnvoyConfig config;
  config.max_message = 200;
  Make(config);
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  transport_.sent.clear();
  v::KvPutRequest put;
  put.keys.push_back(Bytes{1});
  put.values.push_back(Bytes(300, 2));
  std::optional<Result<v::KvResponseData>> answer;
  client_->SendKv("a1", v::KvRequestData{std::move(put)},
                  [&](Result<v::KvResponseData> r) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value()) << "answered inside the call";
  ASSERT_FALSE(answer->has_value());
  EXPECT_TRUE(answer->error().Is("envoy", "message_too_large")) << answer->error().ToString();
  EXPECT_TRUE(transport_.sent.empty());
  EXPECT_TRUE(transport_.closes.empty());
  EXPECT_EQ(client_->pending_kv_requests(), 0u);
  // A small one still goes out.
  client_->SendKv("a1", KvGet("k"), [](Result<v::KvResponseData>) {});
  EXPECT_EQ(SentOf<v::ToRivetKvRequest>().size(), 1u);
}

// Unconfigured, the frame limit is what keel-engine reads: the Init's payload limit + 1 MiB.
TEST_F(EnvoyClientTest, TheFrameLimitFollowsTheInitsPayloadLimit) {
  Connect(10000, /*max_payload=*/10);
  Commands({StartCmd("a1", 1, 1)});
  transport_.sent.clear();
  auto put = [&](size_t values) {
    v::KvPutRequest p;
    for (size_t i = 0; i < values; ++i) {
      p.keys.push_back(Bytes{static_cast<uint8_t>(i)});
      p.values.push_back(Bytes(110000, 3));
    }
    std::optional<Status> answer;
    client_->SendKv("a1", v::KvRequestData{std::move(p)}, [&](Result<v::KvResponseData> r) {
      answer = r.has_value() ? OkStatus() : Status(Unexpected{r.error()});
    });
    return answer;
  };
  auto over = put(10);  // 1,100,000 bytes of values > 1 MiB + 10
  ASSERT_TRUE(over.has_value());
  EXPECT_TRUE(over->error().Is("envoy", "message_too_large")) << over->error().ToString();
  EXPECT_TRUE(transport_.sent.empty());
  EXPECT_FALSE(put(9).has_value()) << "990,000 bytes: sent, waiting for its answer";
  EXPECT_EQ(SentOf<v::ToRivetKvRequest>().size(), 1u);
}

// ---- serverless ---------------------------------------------------------------------------

Bytes ServerlessBody(const v::ToEnvoy& msg, uint16_t prefix, uint16_t encode_version = 4) {
  Bytes out;
  pe::AppendVersionPrefix(prefix, out);
  auto ok = pe::EncodeToEnvoy(msg, encode_version, out);
  EXPECT_TRUE(ok.has_value());
  return out;
}

TEST_F(EnvoyClientTest, ServerlessStartIsQueuedUntilInitAndDeduplicated) {
  Make();
  client_->Start();
  const Bytes body = ServerlessBody(v::ToEnvoyCommands{{StartCmd("s1", 1, 0)}}, 4);
  ASSERT_TRUE(client_->InjectServerlessStart(body).has_value());
  EXPECT_TRUE(host_.starts.empty());
  client_->OnOpen();
  Init();
  ASSERT_EQ(host_.starts.size(), 1u);
  EXPECT_EQ(host_.starts[0].actor_id, "s1");
  EXPECT_EQ(host_.starts[0].command_index, 0);
  // The same start injected again (or replayed) is a duplicate; the first stop (index 1)
  // goes through.
  ASSERT_TRUE(client_->InjectServerlessStart(body).has_value());
  EXPECT_EQ(host_.starts.size(), 1u);
  Commands({StopCmd("s1", 1, 1)});
  EXPECT_EQ(host_.stops.size(), 1u);
  // Events get indices from 0 as usual.
  transport_.sent.clear();
  client_->ActorRunning("s1", 1);
  ASSERT_EQ(SentEvents().size(), 1u);
  EXPECT_EQ(SentEvents()[0].checkpoint.index, 0);
}

TEST_F(EnvoyClientTest, ServerlessStartRejectsBadBodies) {
  Connect();
  const auto invalid = [&](const Bytes& body) {
    Status s = client_->InjectServerlessStart(body);
    return !s.has_value() && s.error().Is("serverless", "invalid_payload");
  };
  EXPECT_TRUE(invalid(ServerlessBody(v::ToEnvoyCommands{{StartCmd("s1", 1, 0)}}, 3)));
  EXPECT_TRUE(invalid(Bytes{4}));
  EXPECT_TRUE(invalid(Bytes{4, 0, 0xff, 0xff}));
  EXPECT_TRUE(
      invalid(ServerlessBody(v::ToEnvoyCommands{{StartCmd("s1", 1, 0), StartCmd("s2", 1, 0)}}, 4)));
  EXPECT_TRUE(invalid(ServerlessBody(v::ToEnvoyCommands{{StopCmd("s1", 1, 0)}}, 4)));
  EXPECT_TRUE(invalid(ServerlessBody(v::ToEnvoyCommands{}, 4)));
  EXPECT_TRUE(invalid(ServerlessBody(v::ToEnvoyPing{1}, 4)));
  EXPECT_TRUE(host_.starts.empty());
  // A body encoded at v3 under a v4 prefix decodes (identical here) and is accepted.
  EXPECT_TRUE(
      client_
          ->InjectServerlessStart(ServerlessBody(v::ToEnvoyCommands{{StartCmd("s3", 1, 0)}}, 4, 3))
          .has_value());
  EXPECT_EQ(host_.starts.size(), 1u);
}

// ---- shutdown -----------------------------------------------------------------------------

TEST_F(EnvoyClientTest, GracefulShutdownWaitsForActorsThenCloses) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->Shutdown(/*immediate=*/false);
  EXPECT_EQ(SentOf<v::ToRivetStopping>().size(), 1u);
  EXPECT_FALSE(client_->shut_down());
  EXPECT_TRUE(transport_.closes.empty());
  Commands({StopCmd("a1", 1, 2, v::StopActorReason::kGoingAway)});
  ASSERT_EQ(host_.stops.size(), 1u);
  client_->ActorStopped("a1", 1);
  EXPECT_TRUE(client_->shut_down());
  ASSERT_EQ(transport_.closes.size(), 1u);
  EXPECT_EQ(transport_.closes[0], std::make_pair(uint16_t{1000}, std::string("envoy.shutdown")));
  EXPECT_EQ(host_.shutdowns, 1);
  // The Stopped event went out before the close.
  auto sent = Sent();
  ASSERT_FALSE(sent.empty());
  EXPECT_TRUE(sent.back().is<v::ToRivetEvents>());
  // The transport's close report afterwards changes nothing; no reconnect.
  client_->OnClosed(1000, "envoy.shutdown");
  clock_.Advance(std::chrono::hours(1));
  EXPECT_EQ(transport_.connects.size(), 1u);
  EXPECT_EQ(host_.shutdowns, 1);
}

// An instance whose start failed reports Stopped on its own (no stop command): it is no
// longer hosted, and a graceful shutdown does not wait for a stop the engine never sends.
TEST_F(EnvoyClientTest, ActorThatStoppedOnItsOwnDoesNotHoldUpShutdown) {
  Connect();
  Commands({StartCmd("a1", 1, 1), StartCmd("a2", 1, 1)});
  client_->ActorStopped("a1", 1, Error("actor", "start_failed", "migration threw"));
  EXPECT_EQ(client_->hosted_actors(), 1u);
  client_->Shutdown(/*immediate=*/false);
  EXPECT_FALSE(client_->shut_down()) << "a2 is still running";
  Commands({StopCmd("a2", 1, 2, v::StopActorReason::kGoingAway)});
  ASSERT_EQ(host_.stops.size(), 1u) << "only the running instance is asked to stop";
  client_->ActorStopped("a2", 1);
  EXPECT_TRUE(client_->shut_down());
  EXPECT_EQ(host_.shutdowns, 1);
  EXPECT_EQ(client_->hosted_actors(), 0u);
}

// A later stop command for such an instance completes it without asking the host again.
TEST_F(EnvoyClientTest, StopCommandForAnActorThatAlreadyStoppedEndsIt) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->ActorStopped("a1", 1, Error("actor", "start_failed", "migration threw"));
  Commands({StopCmd("a1", 1, 2)});
  EXPECT_TRUE(host_.stops.empty());
  EXPECT_EQ(client_->hosted_actors(), 0u);
  // A replay of the old start command starts nothing (command dedup, §4.4).
  Commands({StartCmd("a1", 1, 1)});
  EXPECT_EQ(host_.starts.size(), 1u);
}

TEST_F(EnvoyClientTest, GracefulShutdownWithoutActorsEndsAtOnceAndStopsReconnecting) {
  Connect();
  client_->OnClosed(1006, "");
  client_->Shutdown(false);
  EXPECT_TRUE(client_->shut_down());
  clock_.Advance(std::chrono::hours(1));
  EXPECT_EQ(transport_.connects.size(), 1u);
  EXPECT_TRUE(transport_.closes.empty());
}

TEST_F(EnvoyClientTest, GracefulShutdownWithoutSocketEndsWhenTheLostTimerStopsActors) {
  Connect(/*lost_threshold_ms=*/3000);
  Commands({StartCmd("a1", 1, 1)});
  client_->OnClosed(1006, "");
  client_->Shutdown(false);
  EXPECT_FALSE(client_->shut_down());
  clock_.Advance(std::chrono::hours(1));
  // No reconnect happened; the lost timer stopped the actor, which ended the shutdown.
  EXPECT_EQ(transport_.connects.size(), 1u);
  ASSERT_EQ(host_.stops.size(), 1u);
  EXPECT_EQ(std::get<2>(host_.stops[0]), v::StopActorReason::kLost);
  EXPECT_TRUE(client_->shut_down());
  EXPECT_EQ(host_.shutdowns, 1);
}

TEST_F(EnvoyClientTest, ShutdownWhileConnectingSendsStoppingOnOpen) {
  Connect();
  Commands({StartCmd("a1", 1, 1)});
  client_->OnClosed(1006, "");
  clock_.Advance(1500ms);  // reconnecting
  ASSERT_EQ(transport_.connects.size(), 2u);
  client_->Shutdown(false);
  transport_.sent.clear();
  client_->OnOpen();
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_TRUE(sent[0].is<v::ToRivetMetadata>());
  EXPECT_TRUE(sent[1].is<v::ToRivetStopping>());
}

TEST_F(EnvoyClientTest, ImmediateShutdownWhileConnectingClosesTheTransport) {
  Make();
  client_->Start();
  client_->Shutdown(true);
  EXPECT_TRUE(client_->shut_down());
  ASSERT_EQ(transport_.closes.size(), 1u);
  EXPECT_EQ(host_.shutdowns, 1);
  client_->OnOpen();  // a late open of the abandoned connection changes nothing
  EXPECT_TRUE(transport_.sent.empty());
  client_->OnClosed(1006, "");
  EXPECT_EQ(host_.disconnected, 0);
}

TEST_F(EnvoyClientTest, HostMayStopSynchronouslyInsideOnStopActor) {
  Connect(1000);
  host_.on_stop = [&](const std::string& id, uint32_t gen) { client_->ActorStopped(id, gen); };
  Commands({StartCmd("a1", 1, 1), StartCmd("a2", 1, 1)});
  Commands({StopCmd("a1", 1, 2)});
  EXPECT_EQ(client_->hosted_actors(), 1u);
  client_->OnClosed(1006, "");
  clock_.Advance(1000ms);  // lost: a2 stops synchronously too
  EXPECT_EQ(client_->hosted_actors(), 0u);
  EXPECT_EQ(host_.stops.size(), 2u);
}

}  // namespace
}  // namespace keel::envoy
