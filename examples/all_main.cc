// keel-examples: one runtime process hosting every example actor (counter, chat,
// scheduler, todos) — what `./scripts/dev.sh` runs next to keel-engine.
#include "chat/chat.h"
#include "counter/counter.h"
#include "runtime/native/serve.h"
#include "scheduler/scheduler.h"
#include "todos/todos.h"

int main(int argc, char** argv) {
  return keel::Serve(argc, argv, examples::MakeCounter(), examples::MakeChatRoom(),
                     examples::MakeScheduler(), examples::MakeTodos());
}
