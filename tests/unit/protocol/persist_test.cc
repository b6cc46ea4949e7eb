// Actor-persist records (actors.md §3.5): a 2-byte little-endian schema version, then the
// BARE record. Older actor records upgrade to v4 keeping input, hasInitialized, state and
// scheduled events (u64 timestamps clamped into i64) and dropping the connections stored
// inside them, as Rivet does; connection records exist from v3, queue records from v4.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "support/hex.h"
#include "base/bytes.h"
#include "base/random.h"
#include "protocol/bare/codec.h"
#include "protocol/persist/v1.h"
#include "protocol/persist/v1_random.h"
#include "protocol/persist/v2.h"
#include "protocol/persist/v2_random.h"
#include "protocol/persist/v3.h"
#include "protocol/persist/versioned.h"

namespace keel::protocol::persist {
namespace {

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();

using ::keel::testing::Hex;

// "ok" or the error's "group.code", so a wrong outcome fails the assertion instead of
// aborting on a bad Result access.
template <typename R>
std::string IdOf(const R& result) {
  return result.ok() ? "ok" : result.error().Id();
}

template <typename T>
Bytes Record(uint16_t version, const T& value) {
  Bytes out = {static_cast<uint8_t>(version & 0xff), static_cast<uint8_t>(version >> 8)};
  bare::EncodeTo(value, out);
  return out;
}

// ---- v1 ----------------------------------------------------------------------------------

// A v1 actor record written out by hand (prefix 01 00).
const char* const kV1ActorRecord =
    "0100"                     // version 1
    "01 02 c001"               // input: present, 2 bytes
    "01"                       // hasInitialized
    "03 a1a2a3"                // state
    "01"                       // connections: 1
    "  026331 03746f6b"        //   id "c1", token "tok"
    "  01f6 00"                //   parameters, state
    "  01 047469636b"          //   subscriptions ["tick"]
    "  e803000000000000"       //   lastSeen u64 1000
    "03"                       // scheduledEvents: 3
    "  026531"                 //   eventId "e1"
    "  0068e5cf8b010000"       //   timestamp 1700000000000
    "  00 0470696e67 01 01f6"  // Generic { action "ping", args [f6] }
    "  026532"                 //   eventId "e2"
    "  ffffffffffffffff"       //   timestamp 2^64-1 (above i64 max)
    "  00 036e6f77 00"         //   Generic { action "now", args absent }
    "  026533"                 //   eventId "e3"
    "  0000000000000080"       //   timestamp 2^63 (i64 max + 1)
    "  00 0161 00";            //   Generic { action "a", args absent }

TEST(PersistActor, AV1RecordUpgradesToV4KeepingStateAndScheduledEvents) {
  auto actor = ReadActor(Hex(kV1ActorRecord));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  ASSERT_TRUE(actor->input.has_value());
  EXPECT_EQ(*actor->input, Hex("c001"));
  EXPECT_TRUE(actor->has_initialized);
  EXPECT_EQ(actor->state, Hex("a1a2a3"));
  ASSERT_EQ(actor->scheduled_events.size(), 3u);

  const auto& e1 = actor->scheduled_events[0];
  EXPECT_EQ(e1.event_id, "e1");
  EXPECT_EQ(e1.timestamp, 1700000000000);
  EXPECT_EQ(e1.action, "ping");
  ASSERT_TRUE(e1.args.has_value());
  EXPECT_EQ(*e1.args, Hex("f6"));

  const auto& e2 = actor->scheduled_events[1];
  EXPECT_EQ(e2.event_id, "e2");
  EXPECT_EQ(e2.action, "now");
  EXPECT_FALSE(e2.args.has_value());
  EXPECT_EQ(actor->scheduled_events[2].event_id, "e3");
}

TEST(PersistActor, AV1TimestampAboveI64MaxIsClampedNotWrapped) {
  auto actor = ReadActor(Hex(kV1ActorRecord));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  ASSERT_EQ(actor->scheduled_events.size(), 3u);
  EXPECT_EQ(actor->scheduled_events[1].timestamp, kI64Max);
  EXPECT_EQ(actor->scheduled_events[2].timestamp, kI64Max);
}

TEST(PersistActor, AV1RecordsConnectionsAreDroppedOnUpgrade) {
  // Documented (persist/versioned.h): v3 moved connections to their own keys and old
  // entries cannot be resumed, so nothing of them survives; the v4 Actor has no slot.
  v1::PersistedActor old;
  old.state = Hex("01");
  old.connections.push_back(v1::PersistedConnection{
      "c1", "tok", Hex("f6"), Hex("f7"), {v1::PersistedSubscription{"x"}}, 5});
  auto actor = ReadActor(Record(1, old));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  latest::Actor want;
  want.state = Hex("01");
  EXPECT_TRUE(*actor == want);
  // Re-written, the record is a plain v4 actor with nothing of the connection in it.
  EXPECT_EQ(ToHex(WriteActor(*actor)), ToHex(Hex("0400 00 00 0101 00")));
}

TEST(PersistActor, AV1TimestampOfExactlyI64MaxIsKept) {
  v1::PersistedActor old;
  v1::PersistedScheduleEvent event;
  event.event_id = "e";
  event.timestamp = static_cast<uint64_t>(kI64Max);
  event.kind = v1::GenericPersistedScheduleEvent{"a", std::nullopt};
  old.scheduled_events.push_back(event);
  auto actor = ReadActor(Record(1, old));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  ASSERT_EQ(actor->scheduled_events.size(), 1u);
  EXPECT_EQ(actor->scheduled_events[0].timestamp, kI64Max);
}

TEST(PersistActor, RandomV1RecordsUpgradeFieldByField) {
  constexpr uint64_t kSeed = 0x70310001;
  Random rng(kSeed);
  for (int i = 0; i < 200; ++i) {
    v1::PersistedActor old;
    Randomize(rng, old);
    auto actor = ReadActor(Record(1, old));
    ASSERT_TRUE(actor.ok()) << actor.error().ToString() << " seed " << kSeed << " value " << i;
    ASSERT_EQ(actor->input, old.input) << "seed " << kSeed << " value " << i;
    ASSERT_EQ(actor->has_initialized, old.has_initialized);
    ASSERT_EQ(actor->state, old.state);
    ASSERT_EQ(actor->scheduled_events.size(), old.scheduled_events.size());
    for (size_t j = 0; j < old.scheduled_events.size(); ++j) {
      const auto& from = old.scheduled_events[j];
      const auto& to = actor->scheduled_events[j];
      const auto& generic = *from.kind.get_if<v1::GenericPersistedScheduleEvent>();
      ASSERT_EQ(to.event_id, from.event_id);
      ASSERT_EQ(to.timestamp, from.timestamp > static_cast<uint64_t>(kI64Max)
                                  ? kI64Max
                                  : static_cast<int64_t>(from.timestamp))
          << "seed " << kSeed << " value " << i;
      ASSERT_EQ(to.action, generic.action);
      ASSERT_EQ(to.args, generic.args);
    }
  }
}

// ---- v2 ----------------------------------------------------------------------------------

TEST(PersistActor, AV2RecordUpgradesToV4DroppingConnectionsAndHibernatableSockets) {
  v2::PersistedActor old;
  old.input = Hex("aa");
  old.has_initialized = true;
  old.state = Hex("bbcc");
  old.connections.push_back(
      v2::PersistedConnection{"c1", "tok", Hex("f6"), {}, {}, -7, Hex("01020304")});
  old.scheduled_events.push_back(
      v2::PersistedScheduleEvent{"e1", -1, v2::GenericPersistedScheduleEvent{"ping", Hex("f6")}});
  old.scheduled_events.push_back(v2::PersistedScheduleEvent{
      "e2", kI64Max, v2::GenericPersistedScheduleEvent{"now", std::nullopt}});
  old.hibernatable_web_sockets.push_back(
      v2::PersistedHibernatableWebSocket{Hex("01020304"), 1700000000000, 3});

  auto actor = ReadActor(Record(2, old));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  latest::Actor want;
  want.input = Hex("aa");
  want.has_initialized = true;
  want.state = Hex("bbcc");
  want.scheduled_events = {latest::ScheduleEvent{"e1", -1, "ping", Hex("f6")},
                           latest::ScheduleEvent{"e2", kI64Max, "now", std::nullopt}};
  EXPECT_TRUE(*actor == want);
}

TEST(PersistActor, RandomV2RecordsUpgradeFieldByField) {
  constexpr uint64_t kSeed = 0x70320001;
  Random rng(kSeed);
  for (int i = 0; i < 200; ++i) {
    v2::PersistedActor old;
    Randomize(rng, old);
    auto actor = ReadActor(Record(2, old));
    ASSERT_TRUE(actor.ok()) << actor.error().ToString() << " seed " << kSeed << " value " << i;
    ASSERT_EQ(actor->input, old.input);
    ASSERT_EQ(actor->has_initialized, old.has_initialized);
    ASSERT_EQ(actor->state, old.state);
    ASSERT_EQ(actor->scheduled_events.size(), old.scheduled_events.size());
    for (size_t j = 0; j < old.scheduled_events.size(); ++j) {
      const auto& from = old.scheduled_events[j];
      const auto& to = actor->scheduled_events[j];
      const auto& generic = *from.kind.get_if<v2::GenericPersistedScheduleEvent>();
      ASSERT_TRUE(to == (latest::ScheduleEvent{from.event_id, from.timestamp, generic.action,
                                               generic.args}))
          << "seed " << kSeed << " value " << i;
    }
  }
}

// ---- v3 ----------------------------------------------------------------------------------

TEST(PersistActor, AV3RecordReadsAsTheSameV4Actor) {
  v3::Actor old;
  old.input = std::nullopt;
  old.has_initialized = true;
  old.state = Hex("a0");
  old.scheduled_events = {v3::ScheduleEvent{"e", -5, "tick", Hex("f6")}};
  auto actor = ReadActor(Record(3, old));
  ASSERT_TRUE(actor.ok()) << actor.error().ToString();
  latest::Actor want;
  want.has_initialized = true;
  want.state = Hex("a0");
  want.scheduled_events = {latest::ScheduleEvent{"e", -5, "tick", Hex("f6")}};
  EXPECT_TRUE(*actor == want);
}

TEST(PersistConn, AV3ConnReadsAsTheSameV4Conn) {
  v3::Conn old;
  old.id = "conn-1";
  old.parameters = Hex("a1");
  old.state = Hex("a2");
  old.subscriptions = {v3::Subscription{"tick"}, v3::Subscription{"tock"}};
  old.gateway_id = {1, 2, 3, 4};
  old.request_id = {5, 6, 7, 8};
  old.server_message_index = 65535;
  old.client_message_index = 7;
  old.request_path = "/connect";
  old.request_headers = {{"x-a", "1"}, {"x-b", "2"}};
  auto conn = ReadConn(Record(3, old));
  ASSERT_TRUE(conn.ok()) << conn.error().ToString();
  EXPECT_EQ(conn->id, "conn-1");
  EXPECT_EQ(conn->parameters, Hex("a1"));
  EXPECT_EQ(conn->state, Hex("a2"));
  ASSERT_EQ(conn->subscriptions.size(), 2u);
  EXPECT_EQ(conn->subscriptions[0].event_name, "tick");
  EXPECT_EQ(conn->subscriptions[1].event_name, "tock");
  EXPECT_EQ(conn->gateway_id, (latest::GatewayId{1, 2, 3, 4}));
  EXPECT_EQ(conn->request_id, (latest::RequestId{5, 6, 7, 8}));
  EXPECT_EQ(conn->server_message_index, 65535);
  EXPECT_EQ(conn->client_message_index, 7);
  EXPECT_EQ(conn->request_path, "/connect");
  EXPECT_EQ(conn->request_headers, old.request_headers);
  // v3 and v4 Conn are the same bytes: re-writing only changes the prefix.
  Bytes v3_record = Record(3, old);
  Bytes v4_record = WriteConn(*conn);
  v3_record[0] = 4;
  EXPECT_EQ(ToHex(v4_record), ToHex(v3_record));
}

// ---- v4 Write/Read ------------------------------------------------------------------------

TEST(PersistRecords, WritersEmitTheV4PrefixAndReadersReadItBack) {
  latest::Actor actor;
  actor.input = Hex("01");
  actor.has_initialized = true;
  actor.state = Hex("0203");
  actor.scheduled_events = {latest::ScheduleEvent{"e", 1700000000000, "tick", std::nullopt}};
  Bytes actor_record = WriteActor(actor);
  EXPECT_EQ(ToHex(actor_record),
            ToHex(Hex("0400 01 0101 01 020203 01 0165 0068e5cf8b010000 047469636b 00")));
  auto actor_back = ReadActor(actor_record);
  ASSERT_TRUE(actor_back.ok()) << actor_back.error().ToString();
  EXPECT_TRUE(*actor_back == actor);

  latest::Conn conn;
  conn.id = "c";
  conn.request_headers = {{"k", "v"}};
  auto conn_back = ReadConn(WriteConn(conn));
  ASSERT_TRUE(conn_back.ok()) << conn_back.error().ToString();
  EXPECT_TRUE(*conn_back == conn);

  latest::QueueMetadata meta{~uint64_t{0}, 3};
  Bytes meta_record = WriteQueueMetadata(meta);
  EXPECT_EQ(ToHex(meta_record), ToHex(Hex("0400 ffffffffffffffff 03000000")));
  auto meta_back = ReadQueueMetadata(meta_record);
  ASSERT_TRUE(meta_back.ok()) << meta_back.error().ToString();
  EXPECT_TRUE(*meta_back == meta);

  latest::QueueMessage message{"job", Hex("f6"), 1, 2u, std::nullopt, true, -4};
  auto message_back = ReadQueueMessage(WriteQueueMessage(message));
  ASSERT_TRUE(message_back.ok()) << message_back.error().ToString();
  EXPECT_TRUE(*message_back == message);
}

// ---- Refusals -----------------------------------------------------------------------------

TEST(PersistConn, AConnRecordWithAV1OrV2PrefixIsAnUnsupportedVersion) {
  v3::Conn conn;
  conn.id = "c";
  for (uint16_t version : {uint16_t{1}, uint16_t{2}}) {
    auto read = ReadConn(Record(version, conn));
    ASSERT_FALSE(read.ok());
    EXPECT_TRUE(read.error().Is("protocol", "unsupported_version")) << read.error().ToString();
    EXPECT_EQ(read.error().message(),
              "connection record: invalid version: " + std::to_string(version));
  }
}

TEST(PersistQueue, AV3QueueMessageRecordIsAnUnsupportedVersion) {
  latest::QueueMessage message{"job",        Hex("f6"),    1,           std::nullopt,
                               std::nullopt, std::nullopt, std::nullopt};
  Bytes record = WriteQueueMessage(message);
  record[0] = 3;
  auto read = ReadQueueMessage(record);
  ASSERT_FALSE(read.ok());
  EXPECT_TRUE(read.error().Is("protocol", "unsupported_version")) << read.error().ToString();

  Bytes meta = WriteQueueMetadata(latest::QueueMetadata{1, 1});
  meta[0] = 3;
  auto meta_read = ReadQueueMetadata(meta);
  ASSERT_FALSE(meta_read.ok());
  EXPECT_TRUE(meta_read.error().Is("protocol", "unsupported_version"));
}

TEST(PersistActor, VersionsZeroAndFiveAreUnsupported) {
  for (const char* hex : {"0000 00 00 00 00", "0500 00 00 00 00", "0001 00 00 00 00"}) {
    SCOPED_TRACE(hex);
    auto read = ReadActor(Hex(hex));
    ASSERT_FALSE(read.ok());
    EXPECT_TRUE(read.error().Is("protocol", "unsupported_version")) << read.error().ToString();
  }
}

TEST(PersistRecords, RecordsShorterThanTheVersionPrefixAreDecodeFailures) {
  for (const char* hex : {"", "04"}) {
    SCOPED_TRACE(hex);
    EXPECT_EQ(IdOf(ReadActor(Hex(hex))), "protocol.decode_failed");
    EXPECT_EQ(IdOf(ReadConn(Hex(hex))), "protocol.decode_failed");
    EXPECT_EQ(IdOf(ReadQueueMetadata(Hex(hex))), "protocol.decode_failed");
    EXPECT_EQ(IdOf(ReadQueueMessage(Hex(hex))), "protocol.decode_failed");
  }
}

TEST(PersistRecords, MalformedBodiesAreDecodeFailuresAtEveryVersion) {
  // A valid empty actor at each version, then with a trailing byte and with bool byte 2.
  const char* valid[] = {"0100 00 00 00 00 00", "0200 00 00 00 00 00 00", "0300 00 00 00 00",
                         "0400 00 00 00 00"};
  for (const char* hex : valid) {
    SCOPED_TRACE(hex);
    Bytes record = Hex(hex);
    ASSERT_EQ(IdOf(ReadActor(record)), "ok");
    Bytes trailing = record;
    trailing.push_back(0);
    EXPECT_EQ(IdOf(ReadActor(trailing)), "protocol.decode_failed");
    Bytes bad_bool = record;
    bad_bool[3] = 2;  // hasInitialized
    EXPECT_EQ(IdOf(ReadActor(bad_bool)), "protocol.decode_failed");
    EXPECT_EQ(IdOf(ReadActor(ByteView(record).first(record.size() - 1))), "protocol.decode_failed");
  }
}

}  // namespace
}  // namespace keel::protocol::persist
