# The serverless /start handler (keel::ServerlessHost, src/runtime/native/serverless.h)
# under a real engine: TestEngine + ServerlessHost on loopback, the engine POSTing /start.
# Included from tests/integration/runtime/CMakeLists.txt.
if(KEEL_BUILD_TESTS AND TARGET keel_runtime_native)
  # Until native/serverless.{h,cc} are listed in keel::runtime_native's SRCS
  # (src/runtime/CMakeLists.txt), add the source here so the test links.
  get_target_property(_keel_runtime_native_srcs keel_runtime_native SOURCES)
  if(NOT _keel_runtime_native_srcs MATCHES "serverless\\.cc")
    target_sources(keel_runtime_native PRIVATE ${PROJECT_SOURCE_DIR}/src/runtime/native/serverless.cc)
  endif()

  keel_cc_test(
    NAME runtime_serverless_test
    SRCS ${CMAKE_CURRENT_LIST_DIR}/serverless_test.cc
    DEPS keel::runtime_native keel::examples keel::engine_core keel::net nlohmann_json::nlohmann_json
    LABELS integration
    PREFIX runtime.
  )
endif()
