// ActorKv (actor_kv.h): the protocol's KV operations, limits, error texts, quota
// accounting and actor isolation, over MemKvStore (plus a RocksDB smoke test).
#include "storage/actor_kv.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage_test_util.h"

namespace keel::storage {
namespace {

using testing::B;
using testing::IsOk;
using testing::S;
using testing::TempDir;

constexpr int64_t kNow = 1'700'000'000'123;

Bytes ActorId(uint8_t last, uint8_t fill = 0x01) {
  Bytes id(kActorIdSize, fill);
  id.back() = last;
  return id;
}

Bytes Filled(size_t n, uint8_t byte = 'x') { return Bytes(n, byte); }

std::vector<Bytes> BytesList(const std::vector<std::string>& strings) {
  std::vector<Bytes> out;
  for (const std::string& s : strings) out.push_back(B(s));
  return out;
}

std::vector<std::string> Strings(const std::vector<Bytes>& list) {
  std::vector<std::string> out;
  for (const Bytes& b : list) out.push_back(S(b));
  return out;
}

// The error text of a KvErrorResponse, or "<no error>".
std::string ErrorText(const latest::KvResponseData& response) {
  if (const auto* e = response.get_if<latest::KvErrorResponse>()) return e->message;
  return "<no error>";
}

ActorKvOptions DefaultOptions() {
  ActorKvOptions options;
  options.engine_version = "keel-test-1.2.3";
  return options;
}

// Every fixture test runs twice: with transactions (param false) and as the sole writer
// (true), which must answer identically.
class ActorKvTest : public ::testing::TestWithParam<bool> {
 protected:
  ActorKvTest() { Reset(DefaultOptions()); }

  bool sole_writer() const { return GetParam(); }

  void Reset(ActorKvOptions options) {
    options.sole_writer = sole_writer();
    uut = std::make_unique<ActorKv>(store, std::move(options));
    EXPECT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  }

  latest::KvResponseData Do(const latest::KvRequestData& request, int64_t now = kNow) {
    return uut->Handle(actor, request, now);
  }
  latest::KvResponseData DoFor(const Bytes& id, const latest::KvRequestData& request) {
    return uut->Handle(id, request, kNow);
  }

  latest::KvResponseData PutFor(const Bytes& id, const std::vector<std::string>& keys,
                                const std::vector<std::string>& values, int64_t now = kNow) {
    return uut->Handle(id, latest::KvPutRequest{BytesList(keys), BytesList(values)}, now);
  }
  latest::KvResponseData Put(const std::vector<std::string>& keys,
                             const std::vector<std::string>& values, int64_t now = kNow) {
    return PutFor(actor, keys, values, now);
  }
  void MustPut(const std::vector<std::string>& keys, const std::vector<std::string>& values) {
    latest::KvResponseData r = Put(keys, values);
    ASSERT_TRUE(r.is<latest::KvPutResponse>()) << ErrorText(r);
  }

  latest::KvListResponse ListQuery(const Bytes& id, latest::KvListQuery query,
                                   std::optional<bool> reverse = std::nullopt,
                                   std::optional<uint64_t> limit = std::nullopt) {
    latest::KvResponseData r =
        uut->Handle(id, latest::KvListRequest{std::move(query), reverse, limit}, kNow);
    EXPECT_TRUE(r.is<latest::KvListResponse>()) << ErrorText(r);
    if (!r.is<latest::KvListResponse>()) return {};
    return *r.get_if<latest::KvListResponse>();
  }
  std::vector<std::string> ListKeys(latest::KvListQuery query,
                                    std::optional<bool> reverse = std::nullopt,
                                    std::optional<uint64_t> limit = std::nullopt) {
    return Strings(ListQuery(actor, std::move(query), reverse, limit).keys);
  }
  std::vector<std::string> AllKeysOf(const Bytes& id) {
    return Strings(ListQuery(id, latest::KvListAllQuery{}).keys);
  }
  std::vector<std::string> AllKeys() { return AllKeysOf(actor); }

  std::vector<std::string> GetKeys(const std::vector<std::string>& keys) {
    latest::KvResponseData r = Do(latest::KvGetRequest{BytesList(keys)});
    EXPECT_TRUE(r.is<latest::KvGetResponse>()) << ErrorText(r);
    if (!r.is<latest::KvGetResponse>()) return {};
    return Strings(r.get_if<latest::KvGetResponse>()->keys);
  }

  uint64_t UsageOf(const Bytes& id) {
    auto usage = uut->Usage(id);
    EXPECT_TRUE(IsOk(usage));
    return usage.value_or(0);
  }
  uint64_t Usage() { return UsageOf(actor); }

  MemKvStore store;
  Bytes actor = ActorId(0x42);
  std::unique_ptr<ActorKv> uut;
};

// --- get / put / metadata ------------------------------------------------------------

TEST_P(ActorKvTest, GetReturnsOnlyExistingKeysInRequestOrderWithMetadata) {
  MustPut({"a", "b", "c"}, {"1", "2", "3"});
  latest::KvResponseData r = Do(latest::KvGetRequest{BytesList({"c", "missing", "a"})});
  ASSERT_TRUE(r.is<latest::KvGetResponse>()) << ErrorText(r);
  const auto& got = *r.get_if<latest::KvGetResponse>();
  EXPECT_EQ(Strings(got.keys), (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(Strings(got.values), (std::vector<std::string>{"3", "1"}));
  ASSERT_EQ(got.metadata.size(), 2u);
  for (const latest::KvMetadata& m : got.metadata) {
    EXPECT_EQ(S(m.version), "keel-test-1.2.3");
    EXPECT_EQ(m.update_ts, kNow);
  }
}

TEST_P(ActorKvTest, GetOfNothingAndOfOnlyMissingKeysIsEmpty) {
  EXPECT_TRUE(GetKeys({}).empty());
  EXPECT_TRUE(GetKeys({"nope", ""}).empty());
}

TEST_P(ActorKvTest, EmptyKeyAndEmptyValueAndBinaryBytesAreStored) {
  latest::KvPutRequest put{{Bytes{}, Bytes{0x00, 0xff}}, {Bytes{}, Bytes{0xff, 0x00, 0x10}}};
  ASSERT_TRUE(Do(put).is<latest::KvPutResponse>());
  latest::KvResponseData r = Do(latest::KvGetRequest{{Bytes{0x00, 0xff}, Bytes{}}});
  ASSERT_TRUE(r.is<latest::KvGetResponse>()) << ErrorText(r);
  const auto& got = *r.get_if<latest::KvGetResponse>();
  EXPECT_EQ(got.keys, (std::vector<Bytes>{Bytes{0x00, 0xff}, Bytes{}}));
  EXPECT_EQ(got.values, (std::vector<Bytes>{Bytes{0xff, 0x00, 0x10}, Bytes{}}));
}

TEST_P(ActorKvTest, PutOverwritesValueAndMetadata) {
  MustPut({"k"}, {"old"});
  ASSERT_TRUE(Put({"k"}, {"new"}, kNow + 5).is<latest::KvPutResponse>());
  latest::KvResponseData r = Do(latest::KvGetRequest{BytesList({"k"})});
  const auto& got = *r.get_if<latest::KvGetResponse>();
  EXPECT_EQ(Strings(got.values), (std::vector<std::string>{"new"}));
  EXPECT_EQ(got.metadata[0].update_ts, kNow + 5);
  EXPECT_EQ(S(got.metadata[0].version), "keel-test-1.2.3");
}

TEST_P(ActorKvTest, PutWithRepeatedKeyKeepsTheLastValueAndCountsItOnce) {
  MustPut({"k", "k"}, {"first", "second!"});
  EXPECT_EQ(GetKeys({"k"}), (std::vector<std::string>{"k"}));
  EXPECT_EQ(Usage(), 3u + 7u);
}

// --- list ----------------------------------------------------------------------------

class ActorKvListTest : public ActorKvTest {
 protected:
  ActorKvListTest() {
    latest::KvPutRequest put;
    for (const Bytes& k : keys) {
      put.keys.push_back(k);
      put.values.push_back(B("v:" + S(k)));
    }
    latest::KvResponseData r = Do(put);
    EXPECT_TRUE(r.is<latest::KvPutResponse>()) << ErrorText(r);
  }

  // Unsigned byte order: "" < "a" < "a\0" < "ab" < "ab\0" < "ab\x7f" < "ab\xff" < ...
  std::vector<Bytes> keys = {
      B(""),
      B("a"),
      B(std::string("a\0", 2)),
      B("ab"),
      B(std::string("ab\0", 3)),
      B("ab\x7f"),
      B("ab\xff"),
      B("ab\xff\xff"),
      B("ac"),
      B("b"),
      B("\xff"),
      B(std::string("\xff\x00x", 3)),
      B("\xff\xff"),
  };
};

std::vector<std::string> Sorted(std::vector<Bytes> list) {
  std::sort(list.begin(), list.end());  // vector<uint8_t> compares as unsigned bytes
  return Strings(list);
}

TEST_P(ActorKvListTest, ListAllIsInUnsignedByteOrderWithValuesAndMetadata) {
  latest::KvListResponse got = ListQuery(actor, latest::KvListAllQuery{});
  EXPECT_EQ(Strings(got.keys), Sorted(keys));
  ASSERT_EQ(got.values.size(), keys.size());
  for (size_t i = 0; i < got.keys.size(); ++i) {
    EXPECT_EQ(S(got.values[i]), "v:" + S(got.keys[i]));
    EXPECT_EQ(S(got.metadata[i].version), "keel-test-1.2.3");
    EXPECT_EQ(got.metadata[i].update_ts, kNow);
  }
}

TEST_P(ActorKvListTest, ReverseListsDescending) {
  std::vector<std::string> expected = Sorted(keys);
  std::reverse(expected.begin(), expected.end());
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, true), expected);
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, false), Sorted(keys));
}

TEST_P(ActorKvListTest, LimitCapsTheResultFromTheStartOfTheOrder) {
  std::vector<std::string> all = Sorted(keys);
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, std::nullopt, 2),
            (std::vector<std::string>{all[0], all[1]}));
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, true, 2),
            (std::vector<std::string>{all[all.size() - 1], all[all.size() - 2]}));
  EXPECT_TRUE(ListKeys(latest::KvListAllQuery{}, std::nullopt, 0).empty());
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, std::nullopt, UINT64_MAX), all);
}

TEST_P(ActorKvListTest, AbsentLimitUsesTheDefaultListLimit) {
  EXPECT_EQ(ActorKvLimits{}.default_list_limit, 16384u);
  ActorKvOptions options = DefaultOptions();
  options.limits.default_list_limit = 3;
  Reset(options);
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}).size(), 3u);
  EXPECT_EQ(ListKeys(latest::KvListAllQuery{}, std::nullopt, 5).size(), 5u);
}

TEST_P(ActorKvListTest, RangeIsInclusiveOrExclusiveOfTheEnd) {
  latest::KvListRangeQuery inclusive{B("a"), B("ab"), false};
  EXPECT_EQ(ListKeys(inclusive), (std::vector<std::string>{"a", std::string("a\0", 2), "ab"}));
  latest::KvListRangeQuery exclusive{B("a"), B("ab"), true};
  EXPECT_EQ(ListKeys(exclusive), (std::vector<std::string>{"a", std::string("a\0", 2)}));
  // Start is always inclusive; bounds need not exist.
  latest::KvListRangeQuery loose{B("aa"), B("ab\x80"), true};
  EXPECT_EQ(ListKeys(loose), (std::vector<std::string>{"ab", std::string("ab\0", 3), "ab\x7f"}));
  // Inclusive end does not take the end's extensions.
  latest::KvListRangeQuery ext{B("ab"), B("ab"), false};
  EXPECT_EQ(ListKeys(ext), (std::vector<std::string>{"ab"}));
  // Reverse and limit apply to ranges.
  EXPECT_EQ(ListKeys(inclusive, true, 2), (std::vector<std::string>{"ab", std::string("a\0", 2)}));
}

TEST_P(ActorKvListTest, EmptyOrInvertedRangeListsNothing) {
  EXPECT_TRUE(ListKeys(latest::KvListRangeQuery{B("ab"), B("ab"), true}).empty());
  EXPECT_TRUE(ListKeys(latest::KvListRangeQuery{B("b"), B("a"), false}).empty());
  EXPECT_TRUE(ListKeys(latest::KvListRangeQuery{B("b"), B("a"), true}).empty());
}

TEST_P(ActorKvListTest, RangeReachesTheTopOfTheKeyspace) {
  latest::KvListRangeQuery top{B("\xff"), B("\xff\xff"), false};
  EXPECT_EQ(ListKeys(top),
            (std::vector<std::string>{"\xff", std::string("\xff\x00x", 3), "\xff\xff"}));
}

TEST_P(ActorKvListTest, PrefixIsTrueBytePrefixIncludingNextByteFF) {
  EXPECT_EQ(
      ListKeys(latest::KvListPrefixQuery{B("ab")}),
      (std::vector<std::string>{"ab", std::string("ab\0", 3), "ab\x7f", "ab\xff", "ab\xff\xff"}));
  EXPECT_EQ(ListKeys(latest::KvListPrefixQuery{B("ab\xff")}),
            (std::vector<std::string>{"ab\xff", "ab\xff\xff"}));
  EXPECT_EQ(ListKeys(latest::KvListPrefixQuery{B("ab")}, true, 2),
            (std::vector<std::string>{"ab\xff\xff", "ab\xff"}));
}

TEST_P(ActorKvListTest, PrefixOfOnlyFFBytes) {
  EXPECT_EQ(ListKeys(latest::KvListPrefixQuery{B("\xff")}),
            (std::vector<std::string>{"\xff", std::string("\xff\x00x", 3), "\xff\xff"}));
  EXPECT_EQ(ListKeys(latest::KvListPrefixQuery{B("\xff\xff")}),
            (std::vector<std::string>{"\xff\xff"}));
  EXPECT_TRUE(ListKeys(latest::KvListPrefixQuery{B("\xff\xff\xff")}).empty());
}

TEST_P(ActorKvListTest, EmptyPrefixListsEverything) {
  EXPECT_EQ(ListKeys(latest::KvListPrefixQuery{Bytes{}}), Sorted(keys));
}

// --- delete / delete range / drop ------------------------------------------------------

TEST_P(ActorKvTest, DeleteRemovesKeysAndIgnoresAbsentOnes) {
  MustPut({"a", "b", "c"}, {"1", "2", "3"});
  latest::KvResponseData r = Do(latest::KvDeleteRequest{BytesList({"a", "zzz", "c"})});
  EXPECT_TRUE(r.is<latest::KvDeleteResponse>()) << ErrorText(r);
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(Do(latest::KvDeleteRequest{}).is<latest::KvDeleteResponse>());
}

TEST_P(ActorKvTest, DeleteRangeIsHalfOpen) {
  MustPut({"a", "b", "b\x00", "c", "d"}, {"1", "2", "3", "4", "5"});
  latest::KvResponseData r = Do(latest::KvDeleteRangeRequest{B("b"), B("d")});
  EXPECT_TRUE(r.is<latest::KvDeleteResponse>()) << ErrorText(r);
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a", "d"}));
}

TEST_P(ActorKvTest, DeleteRangeWithStartNotBelowEndDeletesNothing) {
  MustPut({"a", "b", "c"}, {"1", "2", "3"});
  EXPECT_TRUE(Do(latest::KvDeleteRangeRequest{B("b"), B("b")}).is<latest::KvDeleteResponse>());
  EXPECT_TRUE(Do(latest::KvDeleteRangeRequest{B("c"), B("a")}).is<latest::KvDeleteResponse>());
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_P(ActorKvTest, DeleteRangeCoversFFKeysUpToTheEnd) {
  MustPut({"\xfe", "\xff", "\xff\xff"}, {"1", "2", "3"});
  EXPECT_TRUE(Do(latest::KvDeleteRangeRequest{B("\xff"), B("\xff\xff\xff")})
                  .is<latest::KvDeleteResponse>());
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"\xfe"}));
}

TEST_P(ActorKvTest, DropRemovesEveryKeyAndAnswersDropResponse) {
  MustPut({"a", "\xff", ""}, {"1", "2", "3"});
  latest::KvResponseData r = Do(latest::KvDropRequest{});
  EXPECT_TRUE(r.is<latest::KvDropResponse>()) << ErrorText(r);
  EXPECT_TRUE(AllKeys().empty());
  EXPECT_EQ(Usage(), 0u);
  // The actor still exists (drop is KV only) and can write again.
  MustPut({"again"}, {"x"});
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"again"}));
}

TEST_P(ActorKvTest, DropAllDeletesInChunksAndKeepsTheActorRecord) {
  ActorKvOptions options = DefaultOptions();
  options.drop_chunk_keys = 3;
  Reset(options);
  std::vector<std::string> keys, values;
  for (int i = 0; i < 10; ++i) {
    keys.push_back("k" + std::to_string(i));
    values.push_back("v");
  }
  MustPut(keys, values);
  Bytes other = ActorId(0x43);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, other)));
  ASSERT_TRUE(PutFor(other, {"k0"}, {"x"}).is<latest::KvPutResponse>());

  ASSERT_TRUE(IsOk(uut->DropAll(actor)));
  EXPECT_TRUE(AllKeys().empty());
  EXPECT_EQ(Usage(), 0u);
  auto usage_record = store.Get(ActorKvUsageKey(actor));
  ASSERT_TRUE(IsOk(usage_record));
  EXPECT_FALSE(usage_record->has_value());
  auto record = store.Get(ActorRecordKey(actor));
  ASSERT_TRUE(IsOk(record));
  EXPECT_TRUE(record->has_value());
  EXPECT_EQ(AllKeysOf(other), (std::vector<std::string>{"k0"}));
  // Idempotent, and works without the guard record (destroy's path).
  ASSERT_TRUE(IsOk(store.Delete(ActorRecordKey(actor))));
  EXPECT_TRUE(IsOk(uut->DropAll(actor)));
}

// --- limits (exactly at the limit OK, one over rejected, nothing written) ----------------

class ActorKvLimitTest : public ActorKvTest {
 protected:
  ActorKvLimitTest() { MustPut({"existing"}, {"value"}); }

  // Nothing changed since the constructor.
  void ExpectUnchanged() {
    EXPECT_EQ(AllKeys(), (std::vector<std::string>{"existing"}));
    EXPECT_EQ(Usage(), 10u + 5u);
  }

  static std::vector<Bytes> NKeys(size_t n) {
    std::vector<Bytes> out;
    for (size_t i = 0; i < n; ++i) out.push_back(B("n" + std::to_string(i)));
    return out;
  }
};

constexpr const char* kTooManyKeys = "kv.too_many_keys: a maximum of 128 keys is allowed";
constexpr const char* kKeyTooLarge = "kv.key_too_large: key is too long (max 2048 bytes)";

TEST_P(ActorKvLimitTest, GetAllowsAtMost128Keys) {
  EXPECT_TRUE(Do(latest::KvGetRequest{NKeys(128)}).is<latest::KvGetResponse>());
  EXPECT_EQ(ErrorText(Do(latest::KvGetRequest{NKeys(129)})), kTooManyKeys);
}

TEST_P(ActorKvLimitTest, GetKeySizeCountsTwoExtraBytes) {
  EXPECT_TRUE(Do(latest::KvGetRequest{{Filled(2046)}}).is<latest::KvGetResponse>());
  EXPECT_EQ(ErrorText(Do(latest::KvGetRequest{{Filled(2047)}})), kKeyTooLarge);
}

TEST_P(ActorKvLimitTest, DeleteAllowsAtMost128KeysOfAtMost2046Bytes) {
  std::vector<Bytes> keys = NKeys(129);
  keys[0] = B("existing");
  EXPECT_EQ(ErrorText(Do(latest::KvDeleteRequest{keys})), kTooManyKeys);
  EXPECT_EQ(ErrorText(Do(latest::KvDeleteRequest{{B("existing"), Filled(2047)}})), kKeyTooLarge);
  ExpectUnchanged();
  EXPECT_TRUE(Do(latest::KvDeleteRequest{{Filled(2046)}}).is<latest::KvDeleteResponse>());
  keys.pop_back();
  EXPECT_TRUE(Do(latest::KvDeleteRequest{keys}).is<latest::KvDeleteResponse>());
  EXPECT_TRUE(AllKeys().empty());
}

TEST_P(ActorKvLimitTest, PutListsMustHaveEqualLength) {
  latest::KvPutRequest put{{B("a"), B("b")}, {B("1")}};
  EXPECT_EQ(ErrorText(Do(put)), "kv.length_mismatch: Keys list length != values list length");
  put = latest::KvPutRequest{{B("a")}, {B("1"), B("2")}};
  EXPECT_EQ(ErrorText(Do(put)), "kv.length_mismatch: Keys list length != values list length");
  ExpectUnchanged();
}

TEST_P(ActorKvLimitTest, PutAllowsAtMost128Entries) {
  latest::KvPutRequest put{NKeys(129), std::vector<Bytes>(129, B("v"))};
  EXPECT_EQ(ErrorText(Do(put)),
            "kv.too_many_entries: A maximum of 128 key-value entries is allowed");
  ExpectUnchanged();
  put.keys.pop_back();
  put.values.pop_back();
  EXPECT_TRUE(Do(put).is<latest::KvPutResponse>());
  EXPECT_EQ(AllKeys().size(), 129u);
}

TEST_P(ActorKvLimitTest, PutKeySizeCountsTwoExtraBytes) {
  latest::KvPutRequest put{{B("ok"), Filled(2047)}, {B("1"), B("2")}};
  EXPECT_EQ(ErrorText(Do(put)), kKeyTooLarge);
  ExpectUnchanged();
  put.keys[1] = Filled(2046);
  EXPECT_TRUE(Do(put).is<latest::KvPutResponse>());
  EXPECT_EQ(GetKeys({std::string(2046, 'x')}).size(), 1u);
}

TEST_P(ActorKvLimitTest, PutValueAtMost128KiB) {
  latest::KvPutRequest put{{B("ok"), B("big")}, {B("1"), Filled(131073)}};
  EXPECT_EQ(ErrorText(Do(put)), "kv.value_too_large: value is too large (max 128 KiB)");
  ExpectUnchanged();
  put.values[1] = Filled(131072);
  EXPECT_TRUE(Do(put).is<latest::KvPutResponse>());
}

TEST_P(ActorKvLimitTest, PutPayloadAtMost999424Bytes) {
  // 8 one-byte keys (3 bytes each) + 7 full values + one that fills to exactly 999424.
  latest::KvPutRequest put;
  for (int i = 0; i < 8; ++i) {
    put.keys.push_back(B(std::string(1, static_cast<char>('a' + i))));
    put.values.push_back(Filled(131072));
  }
  put.values.back() = Filled(999424 - 24 - 7 * 131072 + 1);
  EXPECT_EQ(ErrorText(Do(put)), "kv.payload_too_large: total payload is too large (max 976 KiB)");
  ExpectUnchanged();
  put.values.back().pop_back();
  EXPECT_TRUE(Do(put).is<latest::KvPutResponse>()) << ErrorText(Do(put));
  EXPECT_EQ(Usage(), 15u + 999424u);
}

TEST_P(ActorKvLimitTest, ListRangeAndPrefixKeysAtMost2046Bytes) {
  using Q = latest::KvListRangeQuery;
  auto list = [&](latest::KvListQuery q) {
    return Do(latest::KvListRequest{std::move(q), {}, {}});
  };
  EXPECT_EQ(ErrorText(list(Q{Filled(2047), B("z"), false})),
            "kv.start_key_too_large: start key is too long (max 2048 bytes)");
  EXPECT_EQ(ErrorText(list(Q{B("a"), Filled(2047), false})),
            "kv.end_key_too_large: end key is too long (max 2048 bytes)");
  EXPECT_EQ(ErrorText(list(latest::KvListPrefixQuery{Filled(2047)})),
            "kv.prefix_too_large: prefix key is too long (max 2048 bytes)");
  EXPECT_TRUE(list(Q{Filled(2046), Filled(2046, 'z'), false}).is<latest::KvListResponse>());
  EXPECT_TRUE(list(latest::KvListPrefixQuery{Filled(2046)}).is<latest::KvListResponse>());
}

TEST_P(ActorKvLimitTest, DeleteRangeKeysAtMost2046Bytes) {
  EXPECT_EQ(ErrorText(Do(latest::KvDeleteRangeRequest{Filled(2047, 'a'), B("z")})),
            "kv.start_key_too_large: start key is too long (max 2048 bytes)");
  EXPECT_EQ(ErrorText(Do(latest::KvDeleteRangeRequest{B("a"), Filled(2047, 'z')})),
            "kv.end_key_too_large: end key is too long (max 2048 bytes)");
  ExpectUnchanged();
  EXPECT_TRUE(Do(latest::KvDeleteRangeRequest{Filled(2046, 'a'), Filled(2046, 'z')})
                  .is<latest::KvDeleteResponse>());
  EXPECT_TRUE(AllKeys().empty());
}

TEST_P(ActorKvLimitTest, ErrorsAreStructuredInTheTypedApi) {
  Status s = uut->Put(actor, latest::KvPutRequest{{B("a")}, {}}, kNow);
  ASSERT_FALSE(s.has_value());
  EXPECT_TRUE(s.error().Is("kv", "length_mismatch"));
  auto g = uut->Get(actor, latest::KvGetRequest{NKeys(129)});
  ASSERT_FALSE(g.has_value());
  EXPECT_TRUE(g.error().Is("kv", "too_many_keys"));
}

// --- quota ------------------------------------------------------------------------------

class ActorKvQuotaTest : public ActorKvTest {
 protected:
  ActorKvQuotaTest() {
    ActorKvOptions options = DefaultOptions();
    options.limits.max_storage = 100;
    Reset(options);
  }
};

TEST_P(ActorKvQuotaTest, PutUpToExactlyTheQuotaThenRejected) {
  EXPECT_EQ(ErrorText(Put({"k"}, {std::string(98, 'v')})),
            "actor.kv_storage_quota_exceeded: Not enough space left in storage (100 bytes "
            "remaining, current payload is 101 bytes).");
  MustPut({"k"}, {std::string(97, 'v')});  // exactly 100
  EXPECT_EQ(Usage(), 100u);
  EXPECT_EQ(ErrorText(Put({"x"}, {""})),
            "actor.kv_storage_quota_exceeded: Not enough space left in storage (0 bytes "
            "remaining, current payload is 3 bytes).");
  // Rivet's rule: the whole payload must fit the remaining space, even for an overwrite.
  EXPECT_EQ(ErrorText(Put({"k"}, {"small"})),
            "actor.kv_storage_quota_exceeded: Not enough space left in storage (0 bytes "
            "remaining, current payload is 8 bytes).");
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"k"}));
  EXPECT_EQ(Usage(), 100u);
}

TEST_P(ActorKvQuotaTest, QuotaErrorComesBeforeKeyAndValueSizeErrors) {
  ActorKvOptions options = DefaultOptions();
  options.limits.max_storage = 10;
  Reset(options);
  latest::KvPutRequest put{{Filled(2047)}, {B("v")}};
  EXPECT_EQ(ErrorText(Do(put)),
            "actor.kv_storage_quota_exceeded: Not enough space left in storage (10 bytes "
            "remaining, current payload is 2050 bytes).");
}

TEST_P(ActorKvQuotaTest, UsageTracksPutOverwriteDeleteRangeAndDrop) {
  EXPECT_EQ(Usage(), 0u);
  MustPut({"a", "bb"}, {"1234567890", "12345"});  // (1+2+10) + (2+2+5)
  EXPECT_EQ(Usage(), 22u);
  MustPut({"a"}, {"12"});  // 13 -> 5
  EXPECT_EQ(Usage(), 14u);
  MustPut({"c", "d", "e"}, {"x", "y", "z"});  // 3 × 4
  EXPECT_EQ(Usage(), 26u);
  ASSERT_TRUE(
      Do(latest::KvDeleteRequest{BytesList({"bb", "missing"})}).is<latest::KvDeleteResponse>());
  EXPECT_EQ(Usage(), 17u);
  ASSERT_TRUE(Do(latest::KvDeleteRangeRequest{B("c"), B("e")}).is<latest::KvDeleteResponse>());
  EXPECT_EQ(Usage(), 9u);
  // Freed space is usable again.
  MustPut({"f"}, {std::string(100 - 9 - 3, 'f')});
  EXPECT_EQ(Usage(), 100u);
  ASSERT_TRUE(Do(latest::KvDropRequest{}).is<latest::KvDropResponse>());
  EXPECT_EQ(Usage(), 0u);
  MustPut({"g"}, {std::string(97, 'g')});
  EXPECT_EQ(Usage(), 100u);
}

TEST_P(ActorKvQuotaTest, QuotaIsPerActor) {
  MustPut({"k"}, {std::string(97, 'v')});
  Bytes other = ActorId(0x43);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, other)));
  EXPECT_TRUE(PutFor(other, {"k"}, {std::string(97, 'v')}).is<latest::KvPutResponse>());
  EXPECT_EQ(UsageOf(other), 100u);
}

// --- actors -----------------------------------------------------------------------------

TEST_P(ActorKvTest, ActorsAreIsolated) {
  // Ids equal but for the last byte, one ending in the KV tag byte itself.
  Bytes b = ActorId(0x10);
  Bytes c = ActorId(0x43);
  for (const Bytes& id : {b, c}) ASSERT_TRUE(IsOk(PutActorRecordForTest(store, id)));
  MustPut({"a", "shared"}, {"1", "A"});
  ASSERT_TRUE(PutFor(b, {"b", "shared"}, {"2", "B"}).is<latest::KvPutResponse>());
  ASSERT_TRUE(PutFor(c, {"\x10", "shared"}, {"3", "C"}).is<latest::KvPutResponse>());

  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a", "shared"}));
  EXPECT_EQ(AllKeysOf(b), (std::vector<std::string>{"b", "shared"}));
  EXPECT_EQ(AllKeysOf(c), (std::vector<std::string>{"\x10", "shared"}));
  latest::KvResponseData r = DoFor(b, latest::KvGetRequest{BytesList({"shared", "a"})});
  EXPECT_EQ(Strings(r.get_if<latest::KvGetResponse>()->values), (std::vector<std::string>{"B"}));

  ASSERT_TRUE(DoFor(b, latest::KvDropRequest{}).is<latest::KvDropResponse>());
  ASSERT_TRUE(DoFor(c, latest::KvDeleteRangeRequest{Bytes{}, B("\xff\xff")})
                  .is<latest::KvDeleteResponse>());
  EXPECT_TRUE(AllKeysOf(b).empty());
  EXPECT_TRUE(AllKeysOf(c).empty());
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a", "shared"}));
  EXPECT_EQ(Usage(), 4u + 9u);
}

TEST_P(ActorKvTest, ActorIdsOfTheWrongWidthAreRejected) {
  // An id that is a prefix of a valid one (and one that extends it) would share its keys.
  Bytes shorter(actor.begin(), actor.end() - 1);
  Bytes longer = actor;
  longer.push_back(0x10);
  MustPut({"a"}, {"1"});
  for (const Bytes& id : {shorter, longer, Bytes{}}) {
    std::string expected = "actor.invalid_id: actor id must be 19 bytes (binary form), got " +
                           std::to_string(id.size());
    EXPECT_EQ(ErrorText(DoFor(id, latest::KvListRequest{latest::KvListAllQuery{}, {}, {}})),
              expected);
    EXPECT_EQ(ErrorText(PutFor(id, {"x"}, {"y"})), expected);
    EXPECT_EQ(ErrorText(DoFor(id, latest::KvDropRequest{})), expected);
    EXPECT_FALSE(uut->DropAll(id).has_value());
  }
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a"}));
}

TEST_P(ActorKvTest, MissingActorRecordIsNotFoundForEveryOperation) {
  MustPut({"a"}, {"1"});
  ASSERT_TRUE(IsOk(store.Delete(ActorRecordKey(actor))));
  uut->Forget(actor);  // the sole writer's contract: a rejected record is followed by it
  const std::string expected = "actor.not_found: actor does not exist";
  std::vector<latest::KvRequestData> requests = {
      latest::KvGetRequest{BytesList({"a"})},
      latest::KvListRequest{latest::KvListAllQuery{}, {}, {}},
      latest::KvPutRequest{BytesList({"b"}), BytesList({"2"})},
      latest::KvDeleteRequest{BytesList({"a"})},
      latest::KvDeleteRangeRequest{B("a"), B("z")},
      latest::KvDropRequest{},
  };
  for (const latest::KvRequestData& request : requests) {
    EXPECT_EQ(ErrorText(Do(request)), expected) << "tag " << request.tag();
  }
  // Nothing was written or removed.
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  EXPECT_EQ(AllKeys(), (std::vector<std::string>{"a"}));
  EXPECT_EQ(Usage(), 4u);
}

TEST_P(ActorKvTest, ActorRecordCheckCanRejectAPresentRecord) {
  ActorKvOptions options = DefaultOptions();
  options.check_actor_record = [](ByteView record) -> Status {
    if (S(record) == "destroyed")
      return Unexpected{Error("actor", "not_found", "actor does not exist")};
    return OkStatus();
  };
  Reset(options);
  MustPut({"a"}, {"1"});
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor, B("destroyed"))));
  uut->Forget(actor);
  EXPECT_EQ(ErrorText(Put({"b"}, {"2"})), "actor.not_found: actor does not exist");
  EXPECT_EQ(ErrorText(Do(latest::KvDeleteRequest{BytesList({"a"})})),
            "actor.not_found: actor does not exist");
  EXPECT_EQ(ErrorText(Do(latest::KvGetRequest{BytesList({"a"})})),
            "actor.not_found: actor does not exist");
}

// Transactions only: the sole writer's put has no conflicts.
class ActorKvTxnTest : public ActorKvTest {};

TEST_P(ActorKvTxnTest, PutRacingADestroyConflictsAndThenSeesTheActorGone) {
  // The record check runs inside the put's txn; on its first call it simulates a destroy
  // committing concurrently (rewriting the guard), so the put's commit must conflict.
  ActorKvOptions options = DefaultOptions();
  int calls = 0;
  options.check_actor_record = [&](ByteView record) -> Status {
    ++calls;
    if (S(record) == "destroyed")
      return Unexpected{Error("actor", "not_found", "actor does not exist")};
    if (calls == 1) {
      EXPECT_TRUE(IsOk(PutActorRecordForTest(store, actor, B("destroyed"))));
    }
    return OkStatus();
  };
  Reset(options);
  EXPECT_EQ(ErrorText(Put({"b"}, {"2"})), "actor.not_found: actor does not exist");
  EXPECT_EQ(calls, 2);
  auto entry = store.Get(ActorKvEntryKey(actor, B("b")));
  ASSERT_TRUE(IsOk(entry));
  EXPECT_FALSE(entry->has_value());
}

TEST_P(ActorKvTxnTest, EndlessConflictsGiveUpAfterMaxAttempts) {
  ActorKvOptions options = DefaultOptions();
  options.max_attempts = 3;
  int calls = 0;
  options.check_actor_record = [&](ByteView) -> Status {
    ++calls;
    EXPECT_TRUE(IsOk(PutActorRecordForTest(store, actor, B(std::to_string(calls)))));
    return OkStatus();
  };
  Reset(options);
  std::string error = ErrorText(Put({"b"}, {"2"}));
  EXPECT_EQ(error.rfind("storage.conflict: gave up after 3 attempts", 0), 0u) << error;
  EXPECT_EQ(calls, 3);
  auto entry = store.Get(ActorKvEntryKey(actor, B("b")));
  ASSERT_TRUE(IsOk(entry));
  EXPECT_FALSE(entry->has_value());
}

// ---- Preload (envoy-protocol.md §5.4) ------------------------------------------------

std::vector<std::string> PreloadedKeys(const latest::PreloadedKv& p) {
  std::vector<std::string> out;
  for (const auto& e : p.entries) out.push_back(S(e.key));
  return out;
}

TEST_P(ActorKvTest, PreloadReadsExactKeysThenPrefixesWithValuesAndMetadata) {
  MustPut({"a", "c", "p/1", "p/2", "q/1"}, {"A", "C", "P1", "P2", "Q1"});
  PreloadPlan plan;
  plan.keys = BytesList({"a", "b", "c"});
  plan.prefixes = {{B("p/"), 1000, false}, {B("z/"), 1000, false}};
  auto pre = uut->Preload(actor, plan, 1 << 20);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_EQ(PreloadedKeys(*pre), (std::vector<std::string>{"a", "c", "p/1", "p/2"}));
  EXPECT_EQ(Strings(pre->requested_get_keys), (std::vector<std::string>{"a", "b", "c"}))
      << "a key that was looked up is listed even when absent: the actor trusts its absence";
  EXPECT_EQ(Strings(pre->requested_prefixes), (std::vector<std::string>{"p/", "z/"}))
      << "an empty prefix that fits is listed (nothing there)";
  EXPECT_EQ(S(pre->entries[0].value), "A");
  EXPECT_EQ(pre->entries[0].metadata.update_ts, kNow);
  EXPECT_EQ(S(pre->entries[0].metadata.version), "keel-test-1.2.3");
}

TEST_P(ActorKvTest, PreloadPrefixOverItsBudgetIsDroppedUnlessPartialIsAllowed) {
  // Each entry costs key + 2 + value = 3 + 2 + 10 = 15 bytes.
  MustPut({"p/1", "p/2", "p/3"},
          {std::string(10, 'x'), std::string(10, 'y'), std::string(10, 'z')});
  PreloadPlan whole;
  whole.prefixes = {{B("p/"), 40, false}};
  auto pre = uut->Preload(actor, whole, 1 << 20);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_TRUE(pre->entries.empty()) << "all or nothing";
  EXPECT_TRUE(pre->requested_prefixes.empty()) << "not listed: the actor lists it itself";

  PreloadPlan partial;
  partial.prefixes = {{B("p/"), 40, true}};
  pre = uut->Preload(actor, partial, 1 << 20);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_EQ(PreloadedKeys(*pre), (std::vector<std::string>{"p/1", "p/2"}));
  EXPECT_EQ(Strings(pre->requested_prefixes), (std::vector<std::string>{"p/"}));

  PreloadPlan exact_fit;
  exact_fit.prefixes = {{B("p/"), 45, false}};
  pre = uut->Preload(actor, exact_fit, 1 << 20);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_EQ(PreloadedKeys(*pre).size(), 3u);
  EXPECT_EQ(Strings(pre->requested_prefixes), (std::vector<std::string>{"p/"}));
}

TEST_P(ActorKvTest, PreloadGlobalBudgetCutsKeysAndSkipsPrefixes) {
  MustPut({"a", "b", "p/1"}, {std::string(20, 'a'), std::string(20, 'b'), "P"});
  PreloadPlan plan;
  plan.keys = BytesList({"a", "b"});
  plan.prefixes = {{B("p/"), 1000, false}};
  // "a" costs 23: it fits in 30; "b" (23) does not: listed but absent; 7 bytes are left,
  // and "p/1" (3 + 2 + 1 = 6) fits in them.
  auto pre = uut->Preload(actor, plan, 30);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_EQ(PreloadedKeys(*pre), (std::vector<std::string>{"a", "p/1"}));
  EXPECT_EQ(Strings(pre->requested_get_keys), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Strings(pre->requested_prefixes), (std::vector<std::string>{"p/"}));
  // With the budget used up exactly, later keys are not even looked up and prefixes are
  // skipped.
  pre = uut->Preload(actor, plan, 23);
  ASSERT_TRUE(IsOk(pre));
  EXPECT_EQ(PreloadedKeys(*pre), (std::vector<std::string>{"a"}));
  EXPECT_EQ(Strings(pre->requested_get_keys), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(pre->requested_prefixes.empty());
}

TEST_P(ActorKvTest, PreloadOfAnUnknownActorIsNotFound) {
  PreloadPlan plan;
  plan.keys = BytesList({"a"});
  auto pre = uut->Preload(ActorId(9), plan, 1 << 20);
  ASSERT_FALSE(pre.has_value());
  EXPECT_EQ(pre.error().code(), "not_found");
}

// Random operations against a std::map model: contents, order and usage always agree.
TEST_P(ActorKvTest, RandomOperationsMatchAModel) {
  ActorKvOptions options = DefaultOptions();
  options.limits.max_storage = 400;
  options.limits.max_keys = 4;
  Reset(options);
  std::mt19937 rng(12345);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  const std::vector<std::string> alphabet = {
      "", "a", std::string("a\0", 2), "ab", "b", "\xff", "\xff\xff", "c"};
  auto key = [&] { return alphabet[static_cast<size_t>(pick(static_cast<int>(alphabet.size())))]; };
  std::map<Bytes, Bytes> model;
  auto model_usage = [&] {
    uint64_t n = 0;
    for (const auto& [k, v] : model) n += k.size() + 2 + v.size();
    return n;
  };
  for (int step = 0; step < 400; ++step) {
    int op = pick(5);
    if (op <= 1) {
      latest::KvPutRequest put;
      int n = pick(6);
      for (int i = 0; i < n; ++i) {
        put.keys.push_back(B(key()));
        put.values.push_back(Filled(static_cast<size_t>(pick(60))));
      }
      uint64_t payload = 0;
      for (size_t i = 0; i < put.keys.size(); ++i)
        payload += put.keys[i].size() + 2 + put.values[i].size();
      bool fits = put.keys.size() <= 4 && model_usage() + payload <= 400;
      latest::KvResponseData r = Do(put);
      ASSERT_EQ(r.is<latest::KvPutResponse>(), fits) << step << ": " << ErrorText(r);
      if (fits) {
        for (size_t i = 0; i < put.keys.size(); ++i) model[put.keys[i]] = put.values[i];
      }
    } else if (op == 2) {
      latest::KvDeleteRequest del{{B(key()), B(key())}};
      ASSERT_TRUE(Do(del).is<latest::KvDeleteResponse>());
      for (const Bytes& k : del.keys) model.erase(k);
    } else if (op == 3) {
      Bytes start = B(key()), end = B(key());
      ASSERT_TRUE(Do(latest::KvDeleteRangeRequest{start, end}).is<latest::KvDeleteResponse>());
      if (start < end) model.erase(model.lower_bound(start), model.lower_bound(end));
    } else if (pick(10) == 0) {
      ASSERT_TRUE(Do(latest::KvDropRequest{}).is<latest::KvDropResponse>());
      model.clear();
    }
    latest::KvListResponse all = ListQuery(actor, latest::KvListAllQuery{});
    std::vector<Bytes> keys, values;
    for (const auto& [k, v] : model) {
      keys.push_back(k);
      values.push_back(v);
    }
    ASSERT_EQ(all.keys, keys) << step;
    ASSERT_EQ(all.values, values) << step;
    ASSERT_EQ(Usage(), model_usage()) << step;
  }
}

// --- storage failures and records -------------------------------------------------------

TEST(ActorKvStorage, StorageFailuresAreAnsweredAsStorageErrors) {
  auto faulty = std::make_unique<FaultyKvStore>(std::make_unique<MemKvStore>());
  FaultyKvStore& store = *faulty;
  Bytes actor = ActorId(1);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKv uut(store, DefaultOptions());
  store.FailNextCommits(1);
  latest::KvResponseData r =
      uut.Handle(actor, latest::KvPutRequest{BytesList({"a"}), BytesList({"1"})}, kNow);
  EXPECT_EQ(ErrorText(r).rfind("storage.io: ", 0), 0u) << ErrorText(r);
  ASSERT_TRUE(IsOk(store.Close()));
  r = uut.Handle(actor, latest::KvGetRequest{BytesList({"a"})}, kNow);
  EXPECT_EQ(ErrorText(r).rfind("storage.closed: ", 0), 0u) << ErrorText(r);
}

TEST_P(ActorKvTest, CorruptEntriesAreStorageCorruption) {
  MustPut({"a"}, {"1"});
  ASSERT_TRUE(IsOk(store.Put(ActorKvEntryKey(actor, B("a")), B("\x07"))));
  EXPECT_EQ(ErrorText(Do(latest::KvGetRequest{BytesList({"a"})})).rfind("storage.corruption: ", 0),
            0u);
  EXPECT_EQ(ErrorText(Do(latest::KvListRequest{latest::KvListAllQuery{}, {}, {}}))
                .rfind("storage.corruption: ", 0),
            0u);
  ASSERT_TRUE(IsOk(store.Put(ActorKvUsageKey(actor), B("\x01\x00\x01"))));
  uut->Forget(actor);  // written behind the sole writer's back
  EXPECT_EQ(ErrorText(Put({"b"}, {"2"})).rfind("storage.corruption: ", 0), 0u);
  // DropAll still clears the actor.
  EXPECT_TRUE(IsOk(uut->DropAll(actor)));
  EXPECT_TRUE(AllKeys().empty());
}

TEST_P(ActorKvTest, StoredLayoutFollowsDocsStorageMd) {
  EXPECT_EQ(ToHex(ActorKvEntryKey(actor, B("k"))), "05" + ToHex(actor) + "10" + "6b");
  EXPECT_EQ(ToHex(ActorKvUsageKey(actor)), "05" + ToHex(actor) + "03");
  EXPECT_EQ(ToHex(ActorRecordKey(actor)), "05" + ToHex(actor) + "01");
  MustPut({"k"}, {"v"});
  auto entry = store.Get(ActorKvEntryKey(actor, B("k")));
  ASSERT_TRUE(IsOk(entry));
  ASSERT_TRUE(entry->has_value());
  // u16 LE version 1, data "v", data "keel-test-1.2.3", i64 LE update_ts.
  Bytes expected = {0x01, 0x00, 0x01, 'v', 15};
  for (char ch : std::string("keel-test-1.2.3")) expected.push_back(static_cast<uint8_t>(ch));
  for (int i = 0; i < 8; ++i) {
    expected.push_back(static_cast<uint8_t>(static_cast<uint64_t>(kNow) >> (8 * i)));
  }
  EXPECT_EQ(ToHex(**entry), ToHex(expected));
  auto usage = store.Get(ActorKvUsageKey(actor));
  ASSERT_TRUE(IsOk(usage));
  EXPECT_EQ(ToHex(usage->value()),
            "0100"
            "0400000000000000");
}

// --- sole writer ------------------------------------------------------------------------

std::unique_ptr<KvStore> OpenRocksDb(const TempDir& dir) {
  auto opened = RocksDbKvStore::Open(dir.path() + "/db");
  EXPECT_TRUE(IsOk(opened));
  if (!opened.has_value()) return nullptr;
  return std::move(opened).value();
}

ActorKvOptions SoleWriterOptions() {
  ActorKvOptions options = DefaultOptions();
  options.sole_writer = true;
  return options;
}

TEST(ActorKvSoleWriter, ThePutReadsTheGuardAndUsageOnceUntilForgotten) {
  MemKvStore store;
  Bytes actor = ActorId(1);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  int checks = 0;
  ActorKvOptions options = SoleWriterOptions();
  options.check_actor_record = [&](ByteView) -> Status {
    ++checks;
    return OkStatus();
  };
  ActorKv uut(store, options);
  auto put = [&](const std::string& key, const std::string& value) {
    return ErrorText(
        uut.Handle(actor, latest::KvPutRequest{BytesList({key}), BytesList({value})}, kNow));
  };
  EXPECT_EQ(uut.remembered_actors(), 0u);
  EXPECT_EQ(put("a", "1"), "<no error>");
  EXPECT_EQ(put("a", "22"), "<no error>");
  EXPECT_EQ(put("b", "3"), "<no error>");
  EXPECT_EQ(checks, 1) << "the guard is read by the first write only";
  EXPECT_EQ(uut.remembered_actors(), 1u);
  EXPECT_EQ(uut.Usage(actor).value_or(0), (1u + 2 + 2) + (1u + 2 + 1));
  // Reads never consult what is remembered: they check the guard every time.
  ASSERT_TRUE(
      uut.Handle(actor, latest::KvGetRequest{BytesList({"a"})}, kNow).is<latest::KvGetResponse>());
  EXPECT_EQ(checks, 2);
  uut.Forget(actor);
  EXPECT_EQ(uut.remembered_actors(), 0u);
  EXPECT_EQ(put("c", ""), "<no error>");
  EXPECT_EQ(checks, 3);
  EXPECT_EQ(uut.Usage(actor).value_or(0), 9u + 3u);
}

TEST(ActorKvSoleWriter, DropAllForgetsTheActorSoTheDestroyedRecordRejectsLaterPuts) {
  MemKvStore store;
  Bytes actor = ActorId(2);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKvOptions options = SoleWriterOptions();
  options.check_actor_record = [](ByteView record) -> Status {
    if (S(record) == "destroyed")
      return Unexpected{Error("actor", "not_found", "actor does not exist")};
    return OkStatus();
  };
  ActorKv uut(store, options);
  auto put = [&](const std::string& key) {
    return ErrorText(
        uut.Handle(actor, latest::KvPutRequest{BytesList({key}), BytesList({"v"})}, kNow));
  };
  EXPECT_EQ(put("a"), "<no error>");
  // Destroy: the record is marked, then the data dropped. A put between the two is the
  // race a transaction also allows (it commits before the drop, which removes it).
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor, B("destroyed"))));
  EXPECT_EQ(put("b"), "<no error>");
  ASSERT_TRUE(IsOk(uut.DropAll(actor)));
  EXPECT_EQ(uut.remembered_actors(), 0u);
  EXPECT_EQ(put("c"), "actor.not_found: actor does not exist");
  auto left = store.Scan(KeyRange::Prefix(ActorKvPrefix(actor)));
  ASSERT_TRUE(IsOk(left));
  EXPECT_TRUE(left->empty());
  auto usage = store.Get(ActorKvUsageKey(actor));
  ASSERT_TRUE(IsOk(usage));
  EXPECT_FALSE(usage->has_value());
}

// Counts the writes of WriteUnchecked batches per key (over a MemKvStore).
class WriteCountingStore final : public KvStore {
 public:
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override { return base_.Get(key); }
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    return base_.Scan(range, options);
  }
  Result<std::unique_ptr<KvSnapshot>> NewSnapshot() override { return base_.NewSnapshot(); }
  Result<std::unique_ptr<KvTxn>> Begin() override { return base_.Begin(); }
  Status Close() override { return base_.Close(); }
  Status WriteUnchecked(std::span<const KvWrite> writes, const CommitOptions& options) override {
    for (const KvWrite& w : writes) {
      ++writes_[Bytes(w.key.begin(), w.key.end())];
      if (options.rewritten_often) ++hinted_[Bytes(w.key.begin(), w.key.end())];
    }
    return base_.WriteUnchecked(writes, options);
  }
  int writes_of(const Bytes& key) const {
    auto it = writes_.find(key);
    return it == writes_.end() ? 0 : it->second;
  }
  // Writes of `key` in batches committed with CommitOptions::rewritten_often.
  int hinted_writes_of(const Bytes& key) const {
    auto it = hinted_.find(key);
    return it == hinted_.end() ? 0 : it->second;
  }

 private:
  MemKvStore base_;
  std::map<Bytes, int> writes_;
  std::map<Bytes, int> hinted_;
};

// An actor's puts ask the store for insert hints (CommitOptions::rewritten_often) only
// once it has kept writing: not its first kRewritesHintedAfter puts since it was
// remembered, so an actor created and called once costs no hint, and again not after it
// was forgotten or after a transaction reset what is remembered.
TEST(ActorKvSoleWriter, PutsAskForInsertHintsOnlyOnceAnActorKeepsWriting) {
  WriteCountingStore store;
  Bytes busy = ActorId(6), quiet = ActorId(7);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, busy)));
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, quiet)));
  ActorKv uut(store, SoleWriterOptions());
  auto put = [&](const Bytes& actor, std::vector<std::string> keys) {
    std::vector<std::string> values(keys.size(), "v");
    return ErrorText(uut.Handle(
        actor, latest::KvPutRequest{BytesList(std::move(keys)), BytesList(std::move(values))},
        kNow));
  };
  const std::string state(1, '\x01');
  const std::string conn = std::string(1, '\x02') + "c";
  const Bytes state_key = ActorKvEntryKey(busy, B(state));
  const Bytes conn_key = ActorKvEntryKey(busy, B(conn));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(put(busy, {state, conn}), "<no error>");
  EXPECT_EQ(store.hinted_writes_of(state_key), 0) << "hinted before the actor kept writing";
  for (int i = 0; i < 4; ++i) ASSERT_EQ(put(busy, {state, conn}), "<no error>");
  EXPECT_EQ(store.writes_of(state_key), 7);
  EXPECT_EQ(store.hinted_writes_of(state_key), 4);
  EXPECT_EQ(store.hinted_writes_of(conn_key), 4);

  ASSERT_EQ(put(quiet, {state}), "<no error>");
  ASSERT_EQ(put(quiet, {state}), "<no error>");
  EXPECT_EQ(store.hinted_writes_of(ActorKvEntryKey(quiet, B(state))), 0);

  // Forgotten: counted again from the start.
  uut.Forget(busy);
  ASSERT_EQ(put(busy, {state}), "<no error>");
  EXPECT_EQ(store.hinted_writes_of(state_key), 4);
  // A transaction (a delete) resets what is remembered, the count too.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(put(busy, {state}), "<no error>");
  EXPECT_EQ(store.hinted_writes_of(state_key), 5);
  ASSERT_TRUE(uut.Handle(busy, latest::KvDeleteRequest{BytesList({conn})}, kNow)
                  .is<latest::KvDeleteResponse>());
  ASSERT_EQ(put(busy, {state}), "<no error>");
  EXPECT_EQ(store.hinted_writes_of(state_key), 5);
  // What was hinted reads back like anything else.
  auto got = uut.Handle(busy, latest::KvGetRequest{BytesList({state, conn})}, kNow);
  ASSERT_TRUE(got.is<latest::KvGetResponse>()) << ErrorText(got);
  EXPECT_EQ(Strings(got.get_if<latest::KvGetResponse>()->keys), std::vector<std::string>{state});
}

// A put that leaves the actor's total unchanged (a value rewritten at the same size) does
// not rewrite the stored usage; any other put does, and the stored usage stays exact.
TEST(ActorKvSoleWriter, APutThatKeepsTheTotalLeavesTheStoredUsageAlone) {
  WriteCountingStore store;
  Bytes actor = ActorId(4);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKv uut(store, SoleWriterOptions());
  auto put = [&](const std::string& key, const std::string& value) {
    return ErrorText(
        uut.Handle(actor, latest::KvPutRequest{BytesList({key}), BytesList({value})}, kNow));
  };
  auto stored_usage = [&]() -> uint64_t {
    ActorKv fresh(store, SoleWriterOptions());  // reads storage, remembers nothing yet
    return fresh.Usage(actor).value_or(~uint64_t{0});
  };
  const Bytes usage_key = ActorKvUsageKey(actor);
  ASSERT_EQ(put("a", "1"), "<no error>");
  EXPECT_EQ(store.writes_of(usage_key), 1);
  ASSERT_EQ(put("a", "2"), "<no error>");  // same size: the total does not move
  EXPECT_EQ(store.writes_of(usage_key), 1) << "an unchanged usage was written again";
  EXPECT_EQ(stored_usage(), 1u + 2 + 1);
  ASSERT_EQ(put("a", "22"), "<no error>");  // one byte more
  EXPECT_EQ(store.writes_of(usage_key), 2);
  EXPECT_EQ(stored_usage(), 1u + 2 + 2);
  // Remembered or read back from storage, the same holds.
  ActorKv restarted(store, SoleWriterOptions());
  ASSERT_TRUE(
      restarted.Handle(actor, latest::KvPutRequest{BytesList({"a"}), BytesList({"33"})}, kNow)
          .is<latest::KvPutResponse>());
  EXPECT_EQ(store.writes_of(usage_key), 2);
  EXPECT_EQ(stored_usage(), 1u + 2 + 2);
}

// The sole writer remembers the stored sizes of the keys an actor's latest puts wrote: a
// rewrite of one of them (the state record on every action) reads no old entry, and the
// usage it keeps stays what a fresh reader of storage computes.
TEST(ActorKvSoleWriter, RewritingARecentlyWrittenKeyReadsNoOldEntry) {
  MemKvStore store;
  Bytes actor = ActorId(5);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKv uut(store, SoleWriterOptions());
  auto put = [&](std::vector<std::string> keys, std::vector<std::string> values) {
    return ErrorText(uut.Handle(
        actor, latest::KvPutRequest{BytesList(std::move(keys)), BytesList(std::move(values))},
        kNow));
  };
  auto stored_usage = [&]() -> uint64_t {
    ActorKv fresh(store, SoleWriterOptions());
    return fresh.Usage(actor).value_or(~uint64_t{0});
  };
  auto listed_bytes = [&]() -> uint64_t {  // what the quota counts, summed from a list
    auto all = uut.List(actor, latest::KvListRequest{latest::KvListAllQuery{}, {}, {}});
    EXPECT_TRUE(IsOk(all));
    uint64_t n = 0;
    for (size_t i = 0; all.has_value() && i < all->keys.size(); ++i) {
      n += all->keys[i].size() + 2 + all->values[i].size();
    }
    return n;
  };
  const std::string state = std::string(1, '\x01');
  const std::string conn = std::string(1, '\x02') + "0f4c5d3e-8a7b-4c1d-9e2f-3a4b5c6d7e8f";

  ASSERT_EQ(put({state}, {"v1"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 1u) << "a key not written before is read";
  ASSERT_EQ(put({state}, {"v22"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 1u) << "the state record's rewrite read its old entry";
  ASSERT_EQ(put({state, conn}, {"s", "c"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 2u);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(
        put({state, conn}, {std::string(static_cast<size_t>(i), 's'), std::string(10 - i, 'c')}),
        "<no error>");
  }
  EXPECT_EQ(uut.entry_reads(), 2u) << "a state and connection record pair is remembered";
  // A repeated key: the request's last value is what was stored, and is remembered.
  ASSERT_EQ(put({state, state}, {"long value", "v"}), "<no error>");
  ASSERT_EQ(put({"other"}, {"o"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 3u);
  ASSERT_EQ(put({state, conn}, {"vv", "cc"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 3u) << "keys the last put did not write are kept while they fit";
  EXPECT_EQ(stored_usage(), listed_bytes());

  // A key too long to remember is read on every put.
  const std::string long_key(300, 'k');
  ASSERT_EQ(put({long_key}, {"1"}), "<no error>");
  ASSERT_EQ(put({long_key}, {"22"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 5u);
  // So is a key pushed out by a put of many others.
  std::vector<std::string> many, values;
  for (int i = 0; i < 20; ++i) {
    many.push_back("many-key-" + std::to_string(i));
    values.push_back("v");
  }
  ASSERT_EQ(put(many, values), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 25u);
  ASSERT_EQ(put({"many-key-19", "many-key-0"}, {"w", "w"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), 26u) << "the newest keys are remembered, the oldest are not";
  EXPECT_EQ(stored_usage(), listed_bytes());

  // A delete forgets the sizes (the usage stays remembered).
  ASSERT_EQ(put({state}, {"x"}), "<no error>");
  const uint64_t reads = uut.entry_reads();
  ASSERT_TRUE(uut.Handle(actor, latest::KvDeleteRequest{BytesList({"other"})}, kNow)
                  .is<latest::KvDeleteResponse>());
  ASSERT_EQ(put({state}, {"xyz"}), "<no error>");
  EXPECT_EQ(uut.entry_reads(), reads + 1);
  EXPECT_EQ(stored_usage(), listed_bytes());
}

// A failed write forgets the actor, so the next one starts from what storage holds, whether
// the failed batch was applied or not.
TEST(ActorKvSoleWriter, AFailedWriteIsReadBackFromStorageNextTime) {
  for (CommitFault fault : {CommitFault::kNotApplied, CommitFault::kAppliedButFailed}) {
    auto faulty = std::make_unique<FaultyKvStore>(std::make_unique<MemKvStore>());
    FaultyKvStore& store = *faulty;
    Bytes actor = ActorId(3);
    ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
    ActorKv uut(store, SoleWriterOptions());
    auto put = [&](const std::string& key, const std::string& value) {
      return ErrorText(
          uut.Handle(actor, latest::KvPutRequest{BytesList({key}), BytesList({value})}, kNow));
    };
    ASSERT_EQ(put("a", "1"), "<no error>");  // usage 4, remembered
    store.FailNextCommits(1, fault);
    const std::string failed = put("a", "12345");
    EXPECT_EQ(failed.rfind("storage.io: ", 0), 0u) << failed;
    EXPECT_EQ(uut.remembered_actors(), 0u);
    ASSERT_EQ(put("b", "22"), "<no error>");
    const uint64_t a_size = fault == CommitFault::kNotApplied ? 1 + 2 + 1 : 1 + 2 + 5;
    EXPECT_EQ(uut.Usage(actor).value_or(0), a_size + (1 + 2 + 2)) << static_cast<int>(fault);
    // Deletes and drops keep the remembered usage exact too.
    ASSERT_TRUE(uut.Handle(actor, latest::KvDeleteRequest{BytesList({"a"})}, kNow)
                    .is<latest::KvDeleteResponse>());
    ASSERT_EQ(put("c", "333"), "<no error>");
    EXPECT_EQ(uut.Usage(actor).value_or(0), 5u + 6u);
    ASSERT_TRUE(uut.Handle(actor, latest::KvDropRequest{}, kNow).is<latest::KvDropResponse>());
    ASSERT_EQ(put("d", ""), "<no error>");
    EXPECT_EQ(uut.Usage(actor).value_or(0), 3u);
  }
}

TEST(ActorKvSoleWriter, ForgetsSomeActorsBeyondItsLimitAndStaysExact) {
  MemKvStore store;
  ActorKvOptions options = SoleWriterOptions();
  options.max_remembered_actors = 64;  // one per stripe
  ActorKv uut(store, options);
  std::vector<Bytes> actors;
  for (int i = 0; i < 300; ++i) {
    Bytes id = ActorId(static_cast<uint8_t>(i), static_cast<uint8_t>(1 + i / 256));
    ASSERT_TRUE(IsOk(PutActorRecordForTest(store, id)));
    actors.push_back(id);
  }
  for (int round = 0; round < 3; ++round) {
    for (const Bytes& id : actors) {
      auto r = uut.Handle(
          id, latest::KvPutRequest{BytesList({"k" + std::to_string(round)}), BytesList({"v"})},
          kNow);
      ASSERT_TRUE(r.is<latest::KvPutResponse>()) << ErrorText(r);
    }
  }
  EXPECT_LE(uut.remembered_actors(), 64u);
  for (const Bytes& id : actors) EXPECT_EQ(uut.Usage(id).value_or(0), 3u * (2 + 2 + 1));
}

TEST(ActorKvSoleWriter, ConcurrentWritersOfOneActorOverRocksDbKeepTheUsageExact) {
  TempDir dir;
  std::unique_ptr<KvStore> opened = OpenRocksDb(dir);
  ASSERT_NE(opened, nullptr);
  KvStore& store = *opened;
  Bytes actor = ActorId(4);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKv uut(store, SoleWriterOptions());
  constexpr int kThreads = 4;
  constexpr int kPuts = 200;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPuts; ++i) {
        // Each thread rewrites its own key with growing values and a shared one.
        const std::string own = "t" + std::to_string(t);
        latest::KvPutRequest put{BytesList({own, "shared"}),
                                 BytesList({std::string(static_cast<size_t>(i % 17), 'x'),
                                            std::string(static_cast<size_t>(t + 1), 's')})};
        if (!uut.Handle(actor, put, kNow).is<latest::KvPutResponse>()) ++failures;
        if (i % 50 == 49 && t == 0) {
          if (!uut.Handle(actor, latest::KvDeleteRequest{BytesList({"t1"})}, kNow)
                   .is<latest::KvDeleteResponse>()) {
            ++failures;
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  auto all = store.Scan(KeyRange::Prefix(ActorKvPrefix(actor)));
  ASSERT_TRUE(IsOk(all));
  uint64_t expected = 0;
  const size_t prefix = ActorKvPrefix(actor).size();
  for (const KeyValue& kv : *all) {
    auto got = uut.Handle(
        actor, latest::KvGetRequest{{Bytes(kv.key.begin() + prefix, kv.key.end())}}, kNow);
    ASSERT_TRUE(got.is<latest::KvGetResponse>());
    expected += kv.key.size() - prefix + 2 + got.get_if<latest::KvGetResponse>()->values[0].size();
  }
  EXPECT_EQ(uut.Usage(actor).value_or(0), expected);
  // A fresh ActorKv (a restarted engine) reads the same usage from storage.
  ActorKv restarted(store, SoleWriterOptions());
  EXPECT_EQ(restarted.Usage(actor).value_or(0), expected);
}

TEST(ActorKvRocksDb, SmokeOverRocksDb) {
  TempDir dir;
  std::unique_ptr<KvStore> opened = OpenRocksDb(dir);
  ASSERT_NE(opened, nullptr);
  KvStore& store = *opened;
  Bytes actor = ActorId(7);
  ASSERT_TRUE(IsOk(PutActorRecordForTest(store, actor)));
  ActorKv uut(store, DefaultOptions());
  auto put = uut.Handle(
      actor,
      latest::KvPutRequest{BytesList({"a", "ab", "ab\xff", "b"}), BytesList({"1", "2", "3", "4"})},
      kNow);
  ASSERT_TRUE(put.is<latest::KvPutResponse>()) << ErrorText(put);
  auto list =
      uut.Handle(actor, latest::KvListRequest{latest::KvListPrefixQuery{B("ab")}, true, {}}, kNow);
  ASSERT_TRUE(list.is<latest::KvListResponse>()) << ErrorText(list);
  EXPECT_EQ(Strings(list.get_if<latest::KvListResponse>()->keys),
            (std::vector<std::string>{"ab\xff", "ab"}));
  auto get = uut.Handle(actor, latest::KvGetRequest{BytesList({"b", "zz"})}, kNow);
  ASSERT_TRUE(get.is<latest::KvGetResponse>()) << ErrorText(get);
  EXPECT_EQ(Strings(get.get_if<latest::KvGetResponse>()->values), (std::vector<std::string>{"4"}));
  EXPECT_TRUE(uut.Handle(actor, latest::KvDeleteRangeRequest{B("a"), B("ab\xff")}, kNow)
                  .is<latest::KvDeleteResponse>());
  EXPECT_EQ(uut.Usage(actor).value_or(0), (5u + 1u) + (3u + 1u));
  EXPECT_TRUE(uut.Handle(actor, latest::KvDropRequest{}, kNow).is<latest::KvDropResponse>());
  auto after = uut.List(actor, latest::KvListRequest{latest::KvListAllQuery{}, {}, {}});
  ASSERT_TRUE(IsOk(after));
  EXPECT_TRUE(after->keys.empty());
  EXPECT_EQ(uut.Usage(actor).value_or(99), 0u);
}

std::string WriterName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "SoleWriter" : "Txn";
}
INSTANTIATE_TEST_SUITE_P(Writers, ActorKvTest, ::testing::Bool(), WriterName);
INSTANTIATE_TEST_SUITE_P(Writers, ActorKvListTest, ::testing::Bool(), WriterName);
INSTANTIATE_TEST_SUITE_P(Writers, ActorKvLimitTest, ::testing::Bool(), WriterName);
INSTANTIATE_TEST_SUITE_P(Writers, ActorKvQuotaTest, ::testing::Bool(), WriterName);
INSTANTIATE_TEST_SUITE_P(Writers, ActorKvTxnTest, ::testing::Values(false), WriterName);

}  // namespace
}  // namespace keel::storage
