#include "wasm/bridge.h"

#include <cerrno>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include "base/log.h"
#include "runtime/core.h"

namespace keel::wasm {

namespace {

val& HostSlot() {
  static val* host = new val(val::undefined());
  return *host;
}

struct Settled {
  bool ok = false;
  val value = val::undefined();
};

std::map<uint32_t, Completion<Settled>>& Waits() {
  static auto* waits = new std::map<uint32_t, Completion<Settled>>();
  return *waits;
}
uint32_t next_wait = 0;

// Kinds the host's kindOf(v) reports (one call instead of several typeof probes).
enum JsKind : int {
  kUndefined = 0,
  kNull = 1,
  kBool = 2,
  kInt = 3,
  kFloat = 4,
  kBigInt = 5,
  kString = 6,
  kBytes = 7,
  kArray = 8,
  kMap = 9,
  kObject = 10,
  kUnsupported = 11,
  kUnreadable = 12,
};

// A JS exception must never unwind through C++ frames (a coroutine it crosses is left
// half-destroyed and the module aborts), so everything that may run user code — getters,
// Proxy traps, iterators — is read by host helpers that return {__keelThrown: e} instead
// of throwing. `helper(v)`: a plain array (items, or [key, value] pairs).
val Parts(const val& v, const char* helper) {
  val parts = Host().call<val>(helper, v);
  if (Host().call<bool>("isThrown", parts)) {
    throw runtime::ActorError(
        "actor", "invalid_value",
        "reading the value threw: " + Host().call<std::string>("describe", parts["__keelThrown"]));
  }
  return parts;
}

constexpr int kMaxDepth = 64;

Value FromJsAt(const val& v, int depth) {
  if (depth > kMaxDepth) {
    throw runtime::ActorError("actor", "invalid_value", "value nested deeper than 64 levels");
  }
  switch (Host().call<int>("kindOf", v)) {
    case kUndefined: return Value::MakeUndefined();
    case kNull: return Value(nullptr);
    case kBool: return Value(v.as<bool>());
    case kInt: return Value(static_cast<int64_t>(v.as<double>()));
    case kFloat: return Value(v.as<double>());
    case kBigInt: {
      std::string text = v.call<std::string>("toString");
      errno = 0;
      if (!text.empty() && text[0] == '-') {
        long long n = std::strtoll(text.c_str(), nullptr, 10);
        if (errno == ERANGE) throw runtime::ActorError("actor", "invalid_value", "BigInt below -2^63");
        return Value(static_cast<int64_t>(n));
      }
      unsigned long long n = std::strtoull(text.c_str(), nullptr, 10);
      if (errno == ERANGE) throw runtime::ActorError("actor", "invalid_value", "BigInt above 2^64-1");
      return Value(static_cast<uint64_t>(n));
    }
    case kString: return Value(v.as<std::string>());
    case kBytes: return Value(BytesFromJs(v));
    case kArray: {
      val items = Parts(v, "arrayItems");
      Value::Array out;
      const size_t n = items["length"].as<size_t>();
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) out.push_back(FromJsAt(items[i], depth + 1));
      return Value(std::move(out));
    }
    case kMap: {
      // [[k, v], …] from the host (Array.from(map)).
      val entries = Parts(v, "mapEntries");
      Value::Map out;
      const size_t n = entries["length"].as<size_t>();
      for (size_t i = 0; i < n; ++i) {
        val e = entries[i];
        out.emplace_back(FromJsAt(e[0], depth + 1), FromJsAt(e[1], depth + 1));
      }
      return Value(std::move(out));
    }
    case kObject: {
      // [[key, value], …] of the own enumerable properties; JSON semantics: the host leaves
      // out undefined-valued ones.
      val entries = Parts(v, "objectEntries");
      Value::Map out;
      const size_t n = entries["length"].as<size_t>();
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        val e = entries[i];
        out.emplace_back(Value(e[0].as<std::string>()), FromJsAt(e[1], depth + 1));
      }
      return Value(std::move(out));
    }
    case kUnreadable:
      throw runtime::ActorError("actor", "invalid_value",
                                "the value could not be inspected (its type check threw)");
    default:
      throw runtime::ActorError("actor", "invalid_value",
                                "functions and symbols cannot be serialized");
  }
}

}  // namespace

void SetHost(val host) { HostSlot() = std::move(host); }
val& Host() { return HostSlot(); }

Task<val> AwaitJs(val value) {
  if (Host().call<bool>("isThrown", value)) ThrowJsError(value["__keelThrown"]);
  if (!Host().call<bool>("isThenable", value)) co_return value;
  uint32_t id = ++next_wait;
  Completion<Settled> done;
  Waits().emplace(id, done);
  Host().call<void>("bridgeThen", value, id);
  Settled s = co_await done;
  if (!s.ok) ThrowJsError(s.value);
  co_return std::move(s.value);
}

void BridgeSettle(uint32_t id, bool ok, val value) {
  auto it = Waits().find(id);
  if (it == Waits().end()) return;
  Completion<Settled> done = it->second;
  Waits().erase(it);
  done.Resolve(Settled{ok, std::move(value)});
}

val ToPromise(Task<val> task) {
  val deferred = Host().call<val>("deferred");
  val promise = deferred["promise"];
  Spawn(std::move(task), [deferred](std::optional<val> v, std::exception_ptr error) {
    if (error) {
      deferred.call<void>("reject", ErrorToJs(error));
    } else {
      deferred.call<void>("resolve", *v);
    }
  });
  return promise;
}

val ErrorToJs(std::exception_ptr error) {
  std::string group = "rivetkit", code = "internal_error", message = "unknown error";
  val metadata = val::undefined();
  bool is_public = false;
  try {
    std::rethrow_exception(error);
  } catch (const runtime::ActorError& e) {
    group = e.group();
    code = e.code();
    message = e.message();
    if (e.metadata()) metadata = ToJs(*e.metadata());
    is_public = e.is_public();
  } catch (const runtime::ScriptError& e) {
    message = e.detail();  // actor code sees the stack it would have seen in JavaScript
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
  }
  return Host().call<val>("makeError", group, code, message, metadata, is_public);
}

void ThrowJsError(const val& error) {
  // {group, code, message, metadata, public} when the error is structured, else {message,
  // stack}: the one-line summary and the full text.
  val info = Host().call<val>("errorInfo", error);
  std::string message = info["message"].as<std::string>();
  if (info["group"].isString() && info["code"].isString()) {
    std::optional<Value> metadata;
    if (!info["metadata"].isUndefined()) {
      try {
        metadata = FromJs(info["metadata"]);
      } catch (const runtime::ActorError& e) {
        // The error stays the one the actor threw; only its metadata is lost.
        LogWarn("wasm", "error metadata cannot be serialized; sent without it",
                {{"error", info["group"].as<std::string>() + "." + info["code"].as<std::string>()},
                 {"reason", e.message()}});
      }
    }
    throw runtime::ActorError(info["group"].as<std::string>(), info["code"].as<std::string>(),
                              std::move(message), std::move(metadata),
                              info["public"].as<bool>());
  }
  throw runtime::ScriptError(std::move(message), info["stack"].as<std::string>());
}

val FailMarker(std::exception_ptr error) {
  val marker = val::object();
  marker.set("__keelError", ErrorToJs(error));
  return marker;
}

Value FromJs(const val& value) { return FromJsAt(value, 0); }

val ToJs(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return val::undefined();
    case Value::Kind::kNull: return val::null();
    case Value::Kind::kBool: return val(v.as_bool());
    case Value::Kind::kInt: {
      const int64_t n = v.as_int();
      constexpr int64_t kSafe = (int64_t{1} << 53);
      if (n >= -kSafe && n <= kSafe) return val(static_cast<double>(n));
      return val::global("BigInt")(std::to_string(n));
    }
    case Value::Kind::kUint: return val::global("BigInt")(std::to_string(v.as_uint()));
    case Value::Kind::kFloat: return val(v.as_double());
    case Value::Kind::kText: return val(v.as_text());
    case Value::Kind::kBytes: return BytesToJs(v.as_bytes());
    case Value::Kind::kArray: {
      val out = val::array();
      for (const Value& item : v.as_array()) out.call<void>("push", ToJs(item));
      return out;
    }
    case Value::Kind::kMap: {
      bool text_keys = true;
      for (const auto& [k, item] : v.as_map()) text_keys = text_keys && k.is_text();
      if (text_keys) {
        val out = val::object();
        for (const auto& [k, item] : v.as_map()) {
          // An own property, as JSON.parse makes it: assigning `__proto__` would set the
          // object's prototype (a client could plant inherited properties).
          if (k.as_text() == "__proto__") {
            Host().call<void>("defineOwn", out, k.as_text(), ToJs(item));
          } else {
            out.set(k.as_text(), ToJs(item));
          }
        }
        return out;
      }
      val out = val::global("Map").new_();
      for (const auto& [k, item] : v.as_map()) out.call<void>("set", ToJs(k), ToJs(item));
      return out;
    }
  }
  return val::undefined();
}

Bytes BytesFromJs(const val& bytes) {
  val u8 = Host().call<val>("toU8", bytes);  // any view or ArrayBuffer, no copy
  if (u8.isNull()) {
    throw runtime::ActorError("actor", "invalid_value",
                              "expected bytes (Uint8Array, ArrayBuffer) or a string, got " +
                                  Host().call<std::string>("describe", bytes));
  }
  Bytes out(u8["length"].as<size_t>());
  if (!out.empty()) {
    val(emscripten::typed_memory_view(out.size(), out.data())).call<void>("set", u8);
  }
  return out;
}

val BytesToJs(ByteView bytes) {
  return val(emscripten::typed_memory_view(bytes.size(), bytes.data())).call<val>("slice");
}

}  // namespace keel::wasm
