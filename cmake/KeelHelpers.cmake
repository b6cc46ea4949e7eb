# keel_cc_library(NAME name [HDRS ...] SRCS ... [DEPS ...] [PRIVATE_DEPS ...] [INTERFACE])
# One target per src/ folder, aliased as keel::<name>. Headers are included as
# "base/error.h" etc. relative to src/.
function(keel_cc_library)
  cmake_parse_arguments(K "INTERFACE" "NAME" "HDRS;SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  if(K_INTERFACE)
    add_library(keel_${K_NAME} INTERFACE)
    target_link_libraries(keel_${K_NAME} INTERFACE ${K_DEPS})
    target_include_directories(keel_${K_NAME} INTERFACE ${PROJECT_SOURCE_DIR}/src)
  else()
    add_library(keel_${K_NAME} STATIC ${K_SRCS} ${K_HDRS})
    target_link_libraries(keel_${K_NAME} PUBLIC ${K_DEPS} PRIVATE ${K_PRIVATE_DEPS})
    target_include_directories(keel_${K_NAME} PUBLIC ${PROJECT_SOURCE_DIR}/src)
    target_compile_options(keel_${K_NAME} PRIVATE ${KEEL_WARNINGS})
  endif()
  add_library(keel::${K_NAME} ALIAS keel_${K_NAME})
endfunction()

# keel_cc_test(NAME name SRCS ... DEPS ... LABELS unit|integration|slow [PREFIX p.] [RUN_SERIAL]
#              [ONE_PROCESS])
# A `unit` binary is ONE ctest entry (named `p.name`, or `name` without PREFIX) that runs all
# its cases in one process: a process per case costs ~0.15 s of ASan start-up, which over
# 1,100 cases was most of `ctest -L unit` (180 s against ~20 s). Run one case with the
# binary itself: `build/dev/tests/unit/…/x_test --gtest_filter='Suite.Case'`. Other labels
# discover one entry per case; PREFIX names them `p.Suite.Case`, so `ctest -R p` selects
# one binary. RUN_SERIAL keeps ctest -j from running anything beside these cases (load
# tests whose processes and threads would starve timing-bounded neighbours on a 2-core
# machine). ONE_PROCESS makes a binary of another label one entry too, as a unit binary is:
# for cases that share a costly fixture set up once per process (a database server).
function(keel_cc_test)
  cmake_parse_arguments(K "RUN_SERIAL;ONE_PROCESS" "NAME;PREFIX" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT KEEL_BUILD_TESTS)
    return()
  endif()
  add_executable(${K_NAME} ${K_SRCS})
  target_link_libraries(${K_NAME} PRIVATE ${K_DEPS} GTest::gtest_main GTest::gmock)
  # Shared test helpers are included as "support/x.h".
  target_include_directories(${K_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_options(${K_NAME} PRIVATE ${KEEL_WARNINGS})
  if(NOT K_LABELS)
    set(K_LABELS unit)
  endif()
  set(serial FALSE)
  if(K_RUN_SERIAL)
    set(serial TRUE)
  endif()
  if(K_ONE_PROCESS)
    add_test(NAME ${K_PREFIX}${K_NAME} COMMAND ${K_NAME} --gtest_brief=1
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${K_PREFIX}${K_NAME} PROPERTIES LABELS "${K_LABELS}"
                         RUN_SERIAL ${serial})
    return()
  endif()
  keel_register_gtest(${K_NAME} "${K_PREFIX}" "${K_LABELS}" ${serial})
endfunction()

# keel_register_gtest(target prefix labels run_serial): the ctest entries of a gtest binary
# (see keel_cc_test).
function(keel_register_gtest target prefix labels serial)
  if(labels STREQUAL "unit")
    add_test(NAME ${prefix}${target} COMMAND ${target} --gtest_brief=1
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(${prefix}${target} PROPERTIES LABELS unit RUN_SERIAL ${serial})
    return()
  endif()
  gtest_discover_tests(${target}
    TEST_PREFIX "${prefix}"
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${labels}" RUN_SERIAL ${serial}
    DISCOVERY_TIMEOUT 60)
endfunction()

# keel_system_library(OUT_VAR PKG pkg-config-name LIB library-name HEADER header)
# Sets OUT_VAR to an imported target for a Debian-packaged C/C++ library: pkg-config
# when available, else find_library/find_path. Link it PRIVATE so its headers stay out
# of ours.
function(keel_system_library out_var)
  cmake_parse_arguments(K "" "PKG;LIB;HEADER" "" ${ARGN})
  string(TOUPPER "KEEL_${K_PKG}" prefix)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND AND NOT TARGET PkgConfig::${prefix})
    pkg_check_modules(${prefix} IMPORTED_TARGET GLOBAL ${K_PKG})
  endif()
  if(TARGET PkgConfig::${prefix})
    set(${out_var} PkgConfig::${prefix} PARENT_SCOPE)
    return()
  endif()
  if(NOT TARGET keel_${K_PKG}_imported)
    find_library(${prefix}_LIBRARY NAMES ${K_LIB} REQUIRED)
    find_path(${prefix}_INCLUDE_DIR ${K_HEADER} REQUIRED)
    add_library(keel_${K_PKG}_imported UNKNOWN IMPORTED GLOBAL)
    set_target_properties(keel_${K_PKG}_imported PROPERTIES
      IMPORTED_LOCATION ${${prefix}_LIBRARY}
      INTERFACE_INCLUDE_DIRECTORIES ${${prefix}_INCLUDE_DIR})
  endif()
  set(${out_var} keel_${K_PKG}_imported PARENT_SCOPE)
endfunction()
