// Encode/decode cost of the envoy protocol codecs (v4 types) per message shape, plus the
// versioned entry points (conversion cost) and a memcpy baseline for the tunnel body.
//
// Every benchmark reports items/s (messages) and bytes/s (encoded bytes). Encoding
// appends into one buffer that is cleared, not reallocated, between iterations; decoding
// reads one prepared buffer into a fresh value (bare::DecodeValue, as production code
// does), so the decode figures include allocating the value's strings and vectors.
// Targets (issue): >= 5M small messages/s per core each way (ping/pong, KV get of three
// keys); a 1 KiB tunnel body within 2x of BM_Memcpy1KiB.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/random.h"
#include "protocol/bare/codec.h"
#include "protocol/envoy/v4.h"
#include "protocol/envoy/v4_random.h"
#include "protocol/envoy/versioned.h"

namespace keel::protocol::envoy {
namespace {

constexpr size_t kTunnelBody = 1024;

Bytes Filled(size_t n, uint8_t seed) {
  Bytes out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 31);
  return out;
}

Bytes Key(int i) {
  std::string k = "user/" + std::to_string(1000 + i) + "/profile";
  return Bytes(k.begin(), k.end());
}

v4::MessageId TunnelMessageId() {
  return v4::MessageId{{0x0a, 0x0b, 0x0c, 0x0d}, {0x01, 0x02, 0x03, 0x04}, 7};
}

v4::ToRivet Pong() { return v4::ToRivetPong{1700000000000}; }
v4::ToEnvoy Ping() { return v4::ToEnvoyPing{1700000000000}; }

v4::ToRivet KvGet3() {
  v4::KvGetRequest get;
  for (int i = 0; i < 3; ++i) get.keys.push_back(Key(i));
  return v4::ToRivetKvRequest{"0f8fa9a4-6ac1-4c2b-bb1f-5f6ad1b1c7e2", 42, get};
}

v4::ToRivet KvPut16x64() {
  v4::KvPutRequest put;
  for (int i = 0; i < 16; ++i) {
    put.keys.push_back(Key(i));
    put.values.push_back(Filled(64, static_cast<uint8_t>(i)));
  }
  return v4::ToRivetKvRequest{"0f8fa9a4-6ac1-4c2b-bb1f-5f6ad1b1c7e2", 43, put};
}

// envoy -> engine: the body of a streamed HTTP response, the common tunnel payload.
v4::ToRivet TunnelResponseChunk1KiB() {
  return v4::ToRivetTunnelMessage{TunnelMessageId(),
                                  v4::ToRivetResponseChunk{Filled(kTunnelBody, 1), false}};
}

// engine -> envoy: a whole HTTP request with a 1 KiB body and typical headers.
v4::ToEnvoy TunnelRequestStart1KiB() {
  v4::ToEnvoyRequestStart start;
  start.actor_id = "0f8fa9a4-6ac1-4c2b-bb1f-5f6ad1b1c7e2";
  start.method = "POST";
  start.path = "/action/increment";
  start.headers = {{"content-type", "application/octet-stream"},
                   {"content-length", "1024"},
                   {"x-rivet-encoding", "bare"},
                   {"user-agent", "keel-bench/1"}};
  start.body = Filled(kTunnelBody, 2);
  start.stream = false;
  return v4::ToEnvoyTunnelMessage{TunnelMessageId(), start};
}

v4::SqliteValueFloat Float(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  v4::SqliteValueFloat f;
  for (int i = 0; i < 8; ++i) f.value[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  return f;
}

v4::ToRivet SqlExecute10Params() {
  v4::SqliteExecuteRequest req;
  req.namespace_id = "default";
  req.actor_id = "0f8fa9a4-6ac1-4c2b-bb1f-5f6ad1b1c7e2";
  req.generation = 3;
  req.sql =
      "INSERT INTO events (id, kind, actor, ts, score, label, payload, parent, flags, note) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  std::vector<v4::SqliteBindParam> params;
  params.push_back(v4::SqliteValueInteger{123456789});
  params.push_back(v4::SqliteValueText{"click"});
  params.push_back(v4::SqliteValueText{"actor-42"});
  params.push_back(v4::SqliteValueInteger{1700000000000});
  params.push_back(Float(0.875));
  params.push_back(v4::SqliteValueText{"button.primary"});
  params.push_back(v4::SqliteValueBlob{Filled(48, 3)});
  params.push_back(v4::SqliteValueNull{});
  params.push_back(v4::SqliteValueInteger{5});
  params.push_back(v4::SqliteValueText{"first visit"});
  req.params = std::move(params);
  return v4::ToRivetSqliteExecuteRequest{9, req};
}

v4::ToEnvoy SqlResult100Rows() {
  v4::SqliteExecuteResult result;
  result.columns = {"id", "name", "score", "avatar"};
  for (int i = 0; i < 100; ++i) {
    std::vector<v4::SqliteColumnValue> row;
    row.push_back(v4::SqliteValueInteger{1000 + i});
    row.push_back(v4::SqliteValueText{"user-" + std::to_string(i)});
    row.push_back(Float(i * 1.5));
    if (i % 4 == 0) {
      row.push_back(v4::SqliteValueNull{});
    } else {
      row.push_back(v4::SqliteValueBlob{Filled(16, static_cast<uint8_t>(i))});
    }
    result.rows.push_back(std::move(row));
  }
  result.changes = 0;
  result.route = v4::SqliteExecuteRoute::kRead;
  return v4::ToEnvoySqliteExecuteResponse{9, v4::SqliteExecuteOk{std::move(result)}};
}

void Report(benchmark::State& state, size_t messages_per_iteration, size_t bytes_per_iteration) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * messages_per_iteration));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes_per_iteration));
  state.counters["msg_bytes"] =
      static_cast<double>(bytes_per_iteration) / static_cast<double>(messages_per_iteration);
}

// ---- Generated codec, v4 types -------------------------------------------------------

template <typename T>
void BM_Encode(benchmark::State& state, T msg) {
  Bytes out;
  bare::EncodeTo(msg, out);
  const size_t size = out.size();
  for (auto _ : state) {
    out.clear();
    bare::EncodeTo(msg, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  Report(state, 1, size);
}

template <typename T>
void BM_Decode(benchmark::State& state, T msg) {
  const Bytes in = bare::EncodeValue(msg);
  for (auto _ : state) {
    auto decoded = bare::DecodeValue<T>(in);
    if (!decoded.has_value()) {
      state.SkipWithError("decode failed");
      break;
    }
    benchmark::DoNotOptimize(decoded);
  }
  Report(state, 1, in.size());
}

// Decoding into one reused message (bare::DecodeInto), as a connection's read loop does:
// byte buffers keep their capacity, so a steady stream of frames allocates nothing.
template <typename T>
void BM_DecodeInto(benchmark::State& state, T msg) {
  const Bytes in = bare::EncodeValue(msg);
  T reused{};
  for (auto _ : state) {
    auto status = bare::DecodeInto(in, reused);
    if (!status.has_value()) {
      state.SkipWithError("decode failed");
      break;
    }
    benchmark::DoNotOptimize(reused);
  }
  Report(state, 1, in.size());
}

BENCHMARK_CAPTURE(BM_DecodeInto, ToRivetPong, Pong());
BENCHMARK_CAPTURE(BM_DecodeInto, KvGet3Keys, KvGet3());
BENCHMARK_CAPTURE(BM_DecodeInto, TunnelResponseChunk1KiB, TunnelResponseChunk1KiB());
BENCHMARK_CAPTURE(BM_DecodeInto, TunnelRequestStart1KiB, TunnelRequestStart1KiB());

BENCHMARK_CAPTURE(BM_Encode, ToRivetPong, Pong());
BENCHMARK_CAPTURE(BM_Decode, ToRivetPong, Pong());
BENCHMARK_CAPTURE(BM_Encode, ToEnvoyPing, Ping());
BENCHMARK_CAPTURE(BM_Decode, ToEnvoyPing, Ping());
BENCHMARK_CAPTURE(BM_Encode, KvGet3Keys, KvGet3());
BENCHMARK_CAPTURE(BM_Decode, KvGet3Keys, KvGet3());
BENCHMARK_CAPTURE(BM_Encode, KvPut16x64B, KvPut16x64());
BENCHMARK_CAPTURE(BM_Decode, KvPut16x64B, KvPut16x64());
BENCHMARK_CAPTURE(BM_Encode, TunnelResponseChunk1KiB, TunnelResponseChunk1KiB());
BENCHMARK_CAPTURE(BM_Decode, TunnelResponseChunk1KiB, TunnelResponseChunk1KiB());
BENCHMARK_CAPTURE(BM_Encode, TunnelRequestStart1KiB, TunnelRequestStart1KiB());
BENCHMARK_CAPTURE(BM_Decode, TunnelRequestStart1KiB, TunnelRequestStart1KiB());
BENCHMARK_CAPTURE(BM_Encode, SqlExecute10Params, SqlExecute10Params());
BENCHMARK_CAPTURE(BM_Decode, SqlExecute10Params, SqlExecute10Params());
BENCHMARK_CAPTURE(BM_Encode, SqlResult100Rows4Cols, SqlResult100Rows());
BENCHMARK_CAPTURE(BM_Decode, SqlResult100Rows4Cols, SqlResult100Rows());

// ---- Baselines for the 1 KiB tunnel body ---------------------------------------------

// Copy into a preallocated buffer: the floor for encoding the body.
void BM_Memcpy1KiB(benchmark::State& state) {
  const Bytes src = Filled(kTunnelBody, 1);
  Bytes dst(kTunnelBody);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kTunnelBody);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  Report(state, 1, kTunnelBody);
}
BENCHMARK(BM_Memcpy1KiB);

// Copy into a fresh vector (malloc + memcpy + free): the floor for decoding into an
// owning value.
void BM_VectorCopy1KiB(benchmark::State& state) {
  const Bytes src = Filled(kTunnelBody, 1);
  for (auto _ : state) {
    Bytes dst(src.begin(), src.end());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  Report(state, 1, kTunnelBody);
}
BENCHMARK(BM_VectorCopy1KiB);

// ---- Versioned entry points (what the engine and envoy call) -------------------------

void BM_EncodeToEnvoy(benchmark::State& state, v4::ToEnvoy msg, uint16_t version) {
  Bytes out;
  if (!EncodeToEnvoy(msg, version, out).has_value()) {
    state.SkipWithError("encode failed");
    return;
  }
  const size_t size = out.size();
  for (auto _ : state) {
    out.clear();
    auto r = EncodeToEnvoy(msg, version, out);
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
  }
  Report(state, 1, size);
}

void BM_DecodeToRivet(benchmark::State& state, v4::ToRivet msg, uint16_t version) {
  Bytes in;
  if (!EncodeToRivet(msg, version, in).has_value()) {
    state.SkipWithError("encode failed");
    return;
  }
  for (auto _ : state) {
    auto decoded = DecodeToRivet(in, version);
    if (!decoded.has_value()) {
      state.SkipWithError("decode failed");
      break;
    }
    benchmark::DoNotOptimize(decoded);
  }
  Report(state, 1, in.size());
}

BENCHMARK_CAPTURE(BM_EncodeToEnvoy, Ping_v4, Ping(), 4);
BENCHMARK_CAPTURE(BM_EncodeToEnvoy, Ping_v3, Ping(), 3);
BENCHMARK_CAPTURE(BM_EncodeToEnvoy, TunnelRequestStart1KiB_v4, TunnelRequestStart1KiB(), 4);
BENCHMARK_CAPTURE(BM_EncodeToEnvoy, TunnelRequestStart1KiB_v3, TunnelRequestStart1KiB(), 3);
BENCHMARK_CAPTURE(BM_DecodeToRivet, Pong_v4, Pong(), 4);
BENCHMARK_CAPTURE(BM_DecodeToRivet, Pong_v3, Pong(), 3);
BENCHMARK_CAPTURE(BM_DecodeToRivet, KvGet3Keys_v4, KvGet3(), 4);
BENCHMARK_CAPTURE(BM_DecodeToRivet, KvGet3Keys_v3, KvGet3(), 3);
BENCHMARK_CAPTURE(BM_DecodeToRivet, TunnelResponseChunk1KiB_v4, TunnelResponseChunk1KiB(), 4);

// ---- A seeded random mix of every ToRivet shape (keel::protocol_testing) -------------

std::vector<v4::ToRivet> RandomToRivets() {
  Random rng(20240601);
  std::vector<v4::ToRivet> out(256);
  for (auto& msg : out) Randomize(rng, msg);
  return out;
}

void BM_EncodeRandomToRivetMix(benchmark::State& state) {
  const auto msgs = RandomToRivets();
  Bytes out;
  size_t bytes = 0;
  for (const auto& m : msgs) bytes += bare::EncodeValue(m).size();
  for (auto _ : state) {
    for (const auto& m : msgs) {
      out.clear();
      bare::EncodeTo(m, out);
      benchmark::DoNotOptimize(out.data());
    }
    benchmark::ClobberMemory();
  }
  Report(state, msgs.size(), bytes);
}
BENCHMARK(BM_EncodeRandomToRivetMix);

void BM_DecodeRandomToRivetMix(benchmark::State& state) {
  std::vector<Bytes> frames;
  size_t bytes = 0;
  for (const auto& m : RandomToRivets()) {
    frames.push_back(bare::EncodeValue(m));
    bytes += frames.back().size();
  }
  for (auto _ : state) {
    for (const auto& f : frames) {
      auto decoded = bare::DecodeValue<v4::ToRivet>(f);
      benchmark::DoNotOptimize(decoded);
    }
  }
  Report(state, frames.size(), bytes);
}
BENCHMARK(BM_DecodeRandomToRivetMix);

}  // namespace
}  // namespace keel::protocol::envoy
