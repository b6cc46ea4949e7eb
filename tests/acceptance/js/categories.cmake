# Categories whose fixtures have JavaScript ports in js/fixtures (see ../CMakeLists.txt):
# each runs as acceptance.<category>.wasm against the wasm runtime in Node.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  actor_state:ActorState
  manager_driver:ManagerDriver
  actor_handle:ActorHandle
)
