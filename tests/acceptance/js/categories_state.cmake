# Categories whose fixtures are ported by js/fixtures/state.mjs and js/fixtures/actions.mjs
# (group `state`; gateway_query_url uses counter.mjs): acceptance.<category>.wasm.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  actor_stateless:ActorStateless
  actor_vars:ActorVars
  actor_kv:ActorKv
  actor_metadata:ActorMetadata
  actor_onstatechange:ActorOnStateChange
  actor_error_handling:ActorErrorHandling
  action_features:ActionFeatures
  gateway_query_url:GatewayQueryUrl
)
