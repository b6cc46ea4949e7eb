# Every actor hook and context API under a real engine: TestEngine + RuntimeHost on
# loopback, a "probe" actor that logs each hook, reached by REST, HTTP and WebSocket
# through the gateway. Included from tests/integration/runtime/CMakeLists.txt.
if(KEEL_BUILD_TESTS AND TARGET keel_runtime_native)
  keel_cc_test(
    NAME runtime_hooks_test
    SRCS ${CMAKE_CURRENT_LIST_DIR}/hooks_integration_test.cc
    DEPS keel::runtime_native keel::examples keel::engine_core keel::net nlohmann_json::nlohmann_json
    LABELS integration
    PREFIX runtime.
  )
endif()
