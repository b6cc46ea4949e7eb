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

// Up to 100 waiting `inbox` messages, without waiting (a plain function: the Receive options
// are built here, outside any co_await expression).
inline keel::Task<std::vector<keel::Queue::Message>> TakeInbox(keel::Queue& queue) {
  keel::Queue::Receive options;
  options.names = {"inbox"};
  options.timeout = std::chrono::milliseconds(0);
  return queue.next_batch(100, std::move(options));
}

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
  // Reminder requests can also be queued while the actor sleeps: messages
  // {"text": ..., "delay_ms": ...} sent to the `inbox` queue wait durably until `drain()`
  // turns them into reminders (returns how many it scheduled; malformed ones are dropped).
  sched.queue("inbox");
  sched.action("drain", [](keel::Ctx<Reminders>& c) -> keel::Task<int64_t> {
    keel::Queue queue = c.queue();
    std::vector<keel::Queue::Message> messages = co_await TakeInbox(queue);
    int64_t scheduled = 0;
    for (const auto& m : messages) {
      const keel::Value* text = m.body.Find("text");
      const keel::Value* delay = m.body.Find("delay_ms");
      if (text == nullptr || !text->is_text() || delay == nullptr || !delay->is_integer() ||
          delay->as_int() < 0) {
        continue;
      }
      Reminder r{"", text->as_text(), c.now_ms() + delay->as_int()};
      r.id = c.schedule().after(std::chrono::milliseconds(delay->as_int()), "fire", r.text, r.due);
      c.state().pending.push_back(r);
      ++scheduled;
    }
    co_return scheduled;
  });
  sched.action("pending", [](keel::Ctx<Reminders>& c) { return c.state().pending; });
  sched.action("fired", [](keel::Ctx<Reminders>& c) { return c.state().fired; });
  return sched;
}

}  // namespace examples
