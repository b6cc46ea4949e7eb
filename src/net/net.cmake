# Included by src/net/CMakeLists.txt. Beast/Asio are compiled only in http_server.cc,
# ws_session.cc, client.cc (and plain Asio in io_runtime.cc); public headers are Boost-free.
find_package(Boost 1.81 REQUIRED CONFIG)
find_package(Threads REQUIRED)

keel_cc_library(
  NAME net
  HDRS http.h io_runtime.h http_server.h client.h blocking_ws_client.h in_process.h
  SRCS http.cc io_runtime.cc http_server.cc ws_session.cc client.cc blocking_ws_client.cc in_process.cc
       internal/runtime_access.h internal/stream.h internal/ws_session.h internal/close_frame.h
  DEPS keel::base Threads::Threads
  PRIVATE_DEPS Boost::headers
)
