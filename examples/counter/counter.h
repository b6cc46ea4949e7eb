// The counter actor (examples/counter/README.md): one durable integer per key.
#pragma once

#include <cstdint>

#include "runtime/actor.h"

namespace examples {

struct Counter {
  int64_t count = 0;
};

inline keel::ActorDef<Counter> MakeCounter() {
  keel::ActorDef<Counter> counter("counter");
  counter.event("newCount");
  counter.action("increment", [](keel::Ctx<Counter>& c, int64_t n) {
    // A sum past int64 would wrap (undefined behaviour): refuse it, the count unchanged.
    int64_t sum = 0;
    if (__builtin_add_overflow(c.state().count, n, &sum)) {
      throw keel::UserError("count would overflow", "overflow");
    }
    c.state().count = sum;
    c.broadcast("newCount", c.state().count);
    return c.state().count;  // the new count is durable before the caller sees it
  });
  counter.action("getCount", [](keel::Ctx<Counter>& c) { return c.state().count; });
  return counter;
}

}  // namespace examples
