# Connection and raw WebSocket categories (group `conn`): fixtures ported in
# js/fixtures/connections.mjs and js/fixtures/raw_websocket.mjs (plus counter.mjs and
# observer.mjs); each runs as acceptance.<category>.wasm against the wasm runtime in Node.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  actor_conn:ActorConn
  actor_conn_state:ActorConnState
  actor_conn_status:ActorConnStatus
  actor_conn_hibernation:ActorConnHibernation
  hibernatable_websocket_protocol:HibernatableWebSocketProtocol
  raw_websocket:RawWebSocket
)
