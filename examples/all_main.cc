// keel-examples: one runtime process hosting every example actor (counter, chat,
// scheduler, todos) — what `./scripts/dev.sh` runs next to keel-engine. With
// `--with-engine [ENGINE FLAGS]` it runs the engine in its own process too
// (runtime/native/with_engine.h).
#include "chat/chat.h"
#include "counter/counter.h"
#include "runtime/native/with_engine.h"
#include "scheduler/scheduler.h"
#include "todos/todos.h"

int main(int argc, char** argv) {
  return keel::ServeWithEngine(argc, argv, examples::MakeCounter(), examples::MakeChatRoom(),
                               examples::MakeScheduler(), examples::MakeTodos());
}
