# Lifecycle, sleep, schedule and queue categories whose fixtures have JavaScript ports
# (fixtures/lifecycle.mjs, sleep.mjs, queue.mjs; see ../CMakeLists.txt): each runs as
# acceptance.<category>.wasm against the wasm runtime in Node.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  actor_sleep:ActorSleep
  actor_run:ActorRun
  actor_save_state:ActorSaveState
  actor_schedule:ActorSchedule
  actor_queue:ActorQueue
  actor_destroy:ActorDestroy
  actor_lifecycle:ActorLifecycle
)
