# Second half of the acceptance suite (actors.md §8): connections, hibernation, raw
# WebSockets, lifecycle, run, sleep, save-state, schedule, queue, lifecycle hooks.
# Included by CMakeLists.txt right after its own KEEL_ACCEPTANCE_CATEGORIES list; same
# <category>:<GtestPrefix> convention (see README.md).
list(APPEND KEEL_ACCEPTANCE_CATEGORIES
  actor_conn:ActorConn
  actor_conn_state:ActorConnState
  actor_conn_status:ActorConnStatus
  actor_conn_hibernation:ActorConnHibernation
  hibernatable_websocket_protocol:HibernatableWebSocketProtocol
  raw_websocket:RawWebSocket
  actor_destroy:ActorDestroy
  actor_lifecycle:ActorLifecycle
  actor_run:ActorRun
  actor_sleep:ActorSleep
  actor_save_state:ActorSaveState
  actor_schedule:ActorSchedule
  actor_queue:ActorQueue
  lifecycle_hooks:LifecycleHooks
)
