# Group `http`: categories whose fixtures are ported in js/fixtures/access.mjs,
# raw_http.mjs and hooks.mjs (plus counter.mjs); each runs as acceptance.<category>.wasm.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  gateway_routing:GatewayRouting
  raw_http:RawHttp
  raw_http_request_properties:RawHttpRequestProperties
  request_access:RequestAccess
  access_control:AccessControl
  conn_error_serialization:ConnErrorSerialization
  lifecycle_hooks:LifecycleHooks
)
