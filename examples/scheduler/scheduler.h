// The scheduler actor (examples/scheduler/README.md): reminders as durable alarms. A
// reminder fires even if the actor sleeps or its runtime restarts in between: the engine
// wakes the actor at the alarm time.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/actor.h"

namespace examples {

struct Reminder {
  std::string id;
  std::string text;
  int64_t due = 0;
};

struct Reminders {
  std::vector<Reminder> pending;
  std::vector<Reminder> fired;
};

inline keel::ActorDef<Reminders> MakeScheduler() {
  keel::ActorDef<Reminders> sched("scheduler");
  sched.event("reminder");
  // remind(text, delay_ms) → reminder id; durable (alarm stored by the engine) on return.
  sched.action("remind", [](keel::Ctx<Reminders>& c, std::string text, int64_t delay_ms) {
    if (delay_ms < 0) throw keel::UserError("delay must not be negative", "invalid_delay");
    Reminder r{"", std::move(text), c.now_ms() + delay_ms};
    r.id = c.schedule().after(std::chrono::milliseconds(delay_ms), "fire", r.text, r.due);
    c.state().pending.push_back(r);
    return r.id;
  });
  // The alarm target: moves the reminder to `fired` and tells subscribers.
  sched.action("fire", [](keel::Ctx<Reminders>& c, std::string text, int64_t due) {
    auto& pending = c.state().pending;
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->text == text && it->due == due) {
        c.state().fired.push_back(*it);
        pending.erase(it);
        break;
      }
    }
    c.broadcast("reminder", text);
  });
  sched.action("pending", [](keel::Ctx<Reminders>& c) { return c.state().pending; });
  sched.action("fired", [](keel::Ctx<Reminders>& c) { return c.state().fired; });
  return sched;
}

}  // namespace examples
