#include "engine/core/keys.h"

#include "storage/actor_kv.h"

namespace keel::engine::keys {
namespace {

Bytes Start(uint8_t subspace) { return Bytes{subspace}; }

void Append(Bytes& out, ByteView v) { out.insert(out.end(), v.begin(), v.end()); }

}  // namespace

void AppendStr(Bytes& out, std::string_view s) {
  for (char c : s) {
    out.push_back(static_cast<uint8_t>(c));
    if (c == '\0') out.push_back(0xFF);
  }
  out.push_back(0x00);
  out.push_back(0x01);
}

void AppendU32(Bytes& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

void AppendU64(Bytes& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

void AppendTs(Bytes& out, int64_t ms) {
  AppendU64(out, static_cast<uint64_t>(ms) ^ 0x8000000000000000ull);
}

bool ReadStr(ByteView& in, std::string& out) {
  out.clear();
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] != 0x00) {
      out.push_back(static_cast<char>(in[i]));
      ++i;
      continue;
    }
    if (i + 1 >= in.size()) return false;
    if (in[i + 1] == 0xFF) {
      out.push_back('\0');
      i += 2;
      continue;
    }
    if (in[i + 1] != 0x01) return false;
    in = in.subspan(i + 2);
    return true;
  }
  return false;
}

bool ReadU32(ByteView& in, uint32_t& out) {
  if (in.size() < 4) return false;
  out = 0;
  for (int i = 0; i < 4; ++i) out = (out << 8) | in[i];
  in = in.subspan(4);
  return true;
}

bool ReadU64(ByteView& in, uint64_t& out) {
  if (in.size() < 8) return false;
  out = 0;
  for (int i = 0; i < 8; ++i) out = (out << 8) | in[i];
  in = in.subspan(8);
  return true;
}

bool ReadTs(ByteView& in, int64_t& out) {
  uint64_t raw = 0;
  if (!ReadU64(in, raw)) return false;
  out = static_cast<int64_t>(raw ^ 0x8000000000000000ull);
  return true;
}

Bytes LayoutVersion() { return Bytes{kMeta, 0x01}; }

Bytes EngineRun() {
  Bytes k{kMeta, 0x03};
  AppendStr(k, "run");
  return k;
}

Bytes EngineOpen() { return Bytes{kMeta, 0x04}; }

Bytes NamespaceRecord(ByteView ns) {
  Bytes k = Start(kNamespaces);
  k.push_back(0x01);
  Append(k, ns);
  return k;
}

Bytes NamespacePrefix() { return Bytes{kNamespaces, 0x01}; }

Bytes NamespaceByName(std::string_view name) {
  Bytes k = Start(kNamespaces);
  k.push_back(0x02);
  AppendStr(k, name);
  return k;
}

Bytes NamespacePools(ByteView ns) {
  Bytes k = Start(kPools);
  Append(k, ns);
  return k;
}

Bytes PoolConfig(ByteView ns, std::string_view pool) {
  Bytes k = NamespacePools(ns);
  AppendStr(k, pool);
  k.push_back(0x01);
  return k;
}

Bytes ServerlessSlots(ByteView ns, std::string_view pool) {
  Bytes k = NamespacePools(ns);
  AppendStr(k, pool);
  k.push_back(0x02);
  return k;
}

Bytes NamespaceEnvoys(ByteView ns) {
  Bytes k = Start(kEnvoys);
  Append(k, ns);
  return k;
}

Bytes EnvoyRecord(ByteView ns, std::string_view envoy) {
  Bytes k = NamespaceEnvoys(ns);
  AppendStr(k, envoy);
  k.push_back(0x01);
  return k;
}

Bytes EnvoysPrefix() { return Start(kEnvoys); }

bool ParseEnvoyRecordKey(ByteView key, ByteView& ns, std::string& envoy) {
  constexpr size_t kIdBytes = 19;  // EngineId::bytes()
  if (key.size() < 1 + kIdBytes || key[0] != kEnvoys) return false;
  ns = key.subspan(1, kIdBytes);
  ByteView rest = key.subspan(1 + kIdBytes);
  return ReadStr(rest, envoy) && rest.size() == 1 && rest[0] == 0x01;
}

Bytes EnvoyCommands(ByteView ns, std::string_view envoy) {
  Bytes k = NamespaceEnvoys(ns);
  AppendStr(k, envoy);
  k.push_back(0x02);
  return k;
}

Bytes EnvoyCommandsOfActor(ByteView ns, std::string_view envoy, ByteView actor) {
  Bytes k = EnvoyCommands(ns, envoy);
  Append(k, actor);
  return k;
}

Bytes EnvoyCommandsOf(ByteView ns, std::string_view envoy, ByteView actor, uint32_t generation) {
  Bytes k = EnvoyCommandsOfActor(ns, envoy, actor);
  AppendU32(k, generation);
  return k;
}

Bytes EnvoyCommand(ByteView ns, std::string_view envoy, ByteView actor, uint32_t generation,
                   uint64_t index) {
  Bytes k = EnvoyCommandsOf(ns, envoy, actor, generation);
  AppendU64(k, index);
  return k;
}

Bytes ActorPrefix(ByteView actor) {
  Bytes k = Start(kActors);
  Append(k, actor);
  return k;
}

// The guard record's key is the storage layer's (ActorKv and PageStore read it).
Bytes ActorRecord(ByteView actor) { return storage::ActorRecordKey(actor); }

Bytes ActorWorkflow(ByteView actor) { return storage::ActorKey(actor, 0x02); }

Bytes ActorHibernating(ByteView actor) { return storage::ActorKey(actor, 0x30); }

storage::KeyRange ActorDataAfterRecord(ByteView actor) {
  return storage::KeyRange{ActorWorkflow(actor), storage::PrefixEnd(ActorPrefix(actor))};
}

Bytes ActorByKey(ByteView ns, std::string_view name, std::string_view key) {
  Bytes k = Start(kActorIndex);
  Append(k, ns);
  k.push_back(0x01);
  AppendStr(k, name);
  AppendStr(k, key);
  return k;
}

Bytes ActorsByNamePrefix(ByteView ns, std::string_view name) {
  Bytes k = Start(kActorIndex);
  Append(k, ns);
  k.push_back(0x02);
  AppendStr(k, name);
  return k;
}

Bytes ActorByName(ByteView ns, std::string_view name, int64_t create_ts, ByteView actor) {
  Bytes k = ActorsByNamePrefix(ns, name);
  AppendTs(k, create_ts);
  Append(k, actor);
  return k;
}

Bytes ActorNamesPrefix(ByteView ns) {
  Bytes k = Start(kActorIndex);
  Append(k, ns);
  k.push_back(0x03);
  return k;
}

Bytes ActorName(ByteView ns, std::string_view name) {
  Bytes k = ActorNamesPrefix(ns);
  AppendStr(k, name);
  return k;
}

Bytes Alarm(int64_t ts, ByteView actor) {
  Bytes k = AlarmPrefix();
  AppendTs(k, ts);
  Append(k, actor);
  return k;
}

Bytes AlarmPrefix() { return Start(kAlarms); }

Bytes Live(ByteView actor) {
  Bytes k = LivePrefix();
  Append(k, actor);
  return k;
}

Bytes LivePrefix() { return Start(kLive); }

}  // namespace keel::engine::keys
