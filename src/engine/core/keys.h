// The engine's keyspace (docs/storage.md §2–§3): order-preserving tuple keys under one-byte
// subspaces. Every engine key is built here, so the layout lives in one file.
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "storage/actor_keys.h"
#include "storage/kv_store.h"

namespace keel::engine::keys {

inline constexpr uint8_t kMeta = 0x01;
inline constexpr uint8_t kNamespaces = 0x02;
inline constexpr uint8_t kPools = 0x03;
inline constexpr uint8_t kEnvoys = 0x04;
// The actor subspace is shared with the storage layer's actor KV and page store.
inline constexpr uint8_t kActors = storage::kActorSubspace;
inline constexpr uint8_t kActorIndex = 0x06;
inline constexpr uint8_t kAlarms = 0x07;
inline constexpr uint8_t kWaiting = 0x08;
// 09 ‹actor› — actors whose workflow is not at rest (not Sleeping, not destroyed): the set the
// orchestrator reloads at startup, so a restart never scans every actor.
inline constexpr uint8_t kLive = 0x09;

// Element encoders (append to `out`).
void AppendStr(Bytes& out, std::string_view s);
void AppendU32(Bytes& out, uint32_t v);
void AppendU64(Bytes& out, uint64_t v);
void AppendTs(Bytes& out, int64_t ms);
// Decoders for elements at the start of `in`; advance `in`. False on malformed input.
bool ReadStr(ByteView& in, std::string& out);
bool ReadU32(ByteView& in, uint32_t& out);
bool ReadU64(ByteView& in, uint64_t& out);
bool ReadTs(ByteView& in, int64_t& out);

// 01 01: layout version.
Bytes LayoutVersion();
// 01 03 "run": the engine run counter (u64 BE), bumped each time an engine opens the store.
Bytes EngineRun();
// 01 04: present while an engine has the store open (docs/storage.md §3.1).
Bytes EngineOpen();

// Namespaces.
Bytes NamespaceRecord(ByteView ns);
Bytes NamespacePrefix();
Bytes NamespaceByName(std::string_view name);

// Pools.
Bytes PoolConfig(ByteView ns, std::string_view pool);
Bytes NamespacePools(ByteView ns);
Bytes ServerlessSlots(ByteView ns, std::string_view pool);

// Envoys and their pending commands.
Bytes EnvoyRecord(ByteView ns, std::string_view envoy);
// 04: every namespace's envoy records and commands.
Bytes EnvoysPrefix();
// The namespace (its 19 id bytes) and envoy key of an EnvoyRecord key; false for any other
// key under EnvoysPrefix (a command) or a malformed one.
bool ParseEnvoyRecordKey(ByteView key, ByteView& ns, std::string& envoy);
Bytes NamespaceEnvoys(ByteView ns);
Bytes EnvoyCommands(ByteView ns, std::string_view envoy);
Bytes EnvoyCommandsOf(ByteView ns, std::string_view envoy, ByteView actor, uint32_t generation);
Bytes EnvoyCommand(ByteView ns, std::string_view envoy, ByteView actor, uint32_t generation,
                   uint64_t index);
// Every command of `actor` stored for `envoy` (all generations).
Bytes EnvoyCommandsOfActor(ByteView ns, std::string_view envoy, ByteView actor);

// Actors.
Bytes ActorPrefix(ByteView actor);
Bytes ActorRecord(ByteView actor);    // 05 a 01 (the guard)
Bytes ActorWorkflow(ByteView actor);  // 05 a 02
Bytes ActorHibernating(ByteView actor);  // 05 a 30
// [05 a 02, PrefixEnd(05 a)): everything but the record (destroy keeps the record).
storage::KeyRange ActorDataAfterRecord(ByteView actor);

// Indexes.
Bytes ActorByKey(ByteView ns, std::string_view name, std::string_view key);
Bytes ActorsByNamePrefix(ByteView ns, std::string_view name);
Bytes ActorByName(ByteView ns, std::string_view name, int64_t create_ts, ByteView actor);
Bytes ActorName(ByteView ns, std::string_view name);
Bytes ActorNamesPrefix(ByteView ns);

// Alarms and the live set.
Bytes Alarm(int64_t ts, ByteView actor);
Bytes AlarmPrefix();
Bytes Live(ByteView actor);
Bytes LivePrefix();

}  // namespace keel::engine::keys
