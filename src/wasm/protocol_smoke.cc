// A small program proving the sans-I/O protocol core works under WebAssembly: it
// round-trips envoy messages through every supported version and checks one spec byte
// example. Built only by the `wasm` preset; scripts/test.sh runs it under Node.
#include <cstdio>

#include "base/bytes.h"
#include "protocol/envoy/versioned.h"

namespace envoy = keel::protocol::envoy;

int main() {
  int failures = 0;
  keel::Bytes out;
  if (!envoy::EncodeToRivet(envoy::latest::ToRivetPong{1700000000000}, 4, out).has_value() ||
      keel::ToHex(out) != "040068e5cf8b010000") {
    std::printf("FAIL ping bytes %s\n", keel::ToHex(out).c_str());
    ++failures;
  }
  envoy::latest::CommandStartActor start;
  start.config.name = "counter";
  envoy::latest::ToEnvoy commands =
      envoy::latest::ToEnvoyCommands{{{envoy::latest::ActorCheckpoint{"a1", 1, 0}, start}}};
  for (uint16_t version = 1; version <= 4; ++version) {
    keel::Bytes frame;
    auto enc = envoy::EncodeToEnvoy(commands, version, frame);
    auto dec = envoy::DecodeToEnvoy(frame, version);
    if (!enc.has_value() || !dec.has_value() || !(*dec == commands)) {
      std::printf("FAIL round trip at v%u\n", version);
      ++failures;
    }
  }
  std::printf("%d passed, %d failed\n", failures == 0 ? 5 : 5 - failures, failures);
  return failures == 0 ? 0 : 1;
}
