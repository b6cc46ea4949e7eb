// The seam between the runtime core (C++ coroutines, keel::Value) and JavaScript
// (promises, JS values) in the wasm build. Emscripten only.
//
//  * AwaitJs: a coroutine awaits a JS value; a thenable suspends it until the promise
//    settles (the host's `bridgeThen` calls BridgeSettle), anything else is returned at once.
//    A rejection, or a synchronous throw the host captured as {__keelThrown: e}, is thrown
//    as an ActorError (the JS error carried `group`/`code`) or else as a
//    runtime::ScriptError: what() "Error: boom" (what may leave the runtime), detail() the
//    stack (for logs); clients get it as an internal error.
//  * ToPromise: a Task<val> becomes a JS Promise; a C++ exception becomes a rejection
//    with a structured error made by the host's `makeError(group, code, message, metadata,
//    public)`.
//  * FromJs / ToJs: JS values ↔ keel::Value (undefined, null, booleans, numbers — integral
//    ones up to 2^53 as integers —, BigInt, strings, Uint8Array/ArrayBuffer, arrays, Map,
//    plain objects). Functions and symbols are refused with actor.invalid_value.
//
// Everything runs on the JS event loop: one thread, no locks.
#pragma once

#include <emscripten/val.h>

#include <cstdint>
#include <exception>
#include <string>

#include "base/bytes.h"
#include "runtime/task.h"
#include "value/value.h"

namespace keel::wasm {

using emscripten::val;

// A host object for the stateless value and promise helpers (kindOf, deferred, makeError,
// …): the last runtime's (every host built by the package has the same ones). Timers, the
// socket and calls into actor code go through each runtime's own host.
void SetHost(val host);
val& Host();

Task<val> AwaitJs(val value);
// Called by the host when a promise handed to `bridgeThen(promise, id)` settles.
void BridgeSettle(uint32_t id, bool ok, val value);

val ToPromise(Task<val> task);
// The structured JS error for a C++ exception (not sanitised: actor code sees it).
val ErrorToJs(std::exception_ptr error);
// A JS error (anything thrown) as the C++ exception the core understands.
[[noreturn]] void ThrowJsError(const val& error);
// {__keelError: err}: how synchronous bindings report failure (the JS wrapper throws it).
val FailMarker(std::exception_ptr error);

Value FromJs(const val& value);
val ToJs(const Value& value);
Bytes BytesFromJs(const val& u8);  // Uint8Array or ArrayBuffer
val BytesToJs(ByteView bytes);      // a fresh Uint8Array (a copy, not a view of wasm memory)

}  // namespace keel::wasm
