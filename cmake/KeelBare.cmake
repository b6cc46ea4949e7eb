# Code generation from BARE schemas (tools/bare_codegen). Generated sources land in
# ${KEEL_GEN_DIR}/protocol/<family>/ and are included as "protocol/<family>/vN.h".
set(KEEL_GEN_DIR ${CMAKE_BINARY_DIR}/gen)
set(KEEL_BARE_CODEGEN ${PROJECT_SOURCE_DIR}/tools/bare_codegen/bare_codegen.py)
set(KEEL_BARE_CODEGEN_DEPS ${KEEL_BARE_CODEGEN} ${PROJECT_SOURCE_DIR}/tools/bare_codegen/bare_schema.py)

# keel_bare_codec(FAMILY envoy VERSION 4 OUT_SRCS var OUT_JSON_SRCS var OUT_RANDOM_SRCS var)
function(keel_bare_codec)
  cmake_parse_arguments(K "" "FAMILY;VERSION;OUT_SRCS;OUT_JSON_SRCS;OUT_RANDOM_SRCS" "" ${ARGN})
  set(schema ${PROJECT_SOURCE_DIR}/schemas/${K_FAMILY}/v${K_VERSION}.bare)
  set(outdir ${KEEL_GEN_DIR}/protocol/${K_FAMILY})
  set(ns keel::protocol::${K_FAMILY}::v${K_VERSION})
  add_custom_command(
    OUTPUT ${outdir}/v${K_VERSION}.h ${outdir}/v${K_VERSION}.cc
    COMMAND Python3::Interpreter ${KEEL_BARE_CODEGEN} codec ${schema} --namespace ${ns}
            --outdir ${outdir} --base v${K_VERSION} --include-prefix protocol/${K_FAMILY}/
    DEPENDS ${schema} ${KEEL_BARE_CODEGEN_DEPS}
    COMMENT "bare_codegen: ${K_FAMILY} v${K_VERSION} codec" VERBATIM)
  set(${K_OUT_SRCS} ${${K_OUT_SRCS}} ${outdir}/v${K_VERSION}.h ${outdir}/v${K_VERSION}.cc PARENT_SCOPE)
  if(K_OUT_JSON_SRCS)
    add_custom_command(
      OUTPUT ${outdir}/v${K_VERSION}_json.h ${outdir}/v${K_VERSION}_json.cc
      COMMAND Python3::Interpreter ${KEEL_BARE_CODEGEN} json ${schema} --namespace ${ns}
              --outdir ${outdir} --base v${K_VERSION}_json --include-prefix protocol/${K_FAMILY}/
              --codec-header protocol/${K_FAMILY}/v${K_VERSION}.h
      DEPENDS ${schema} ${KEEL_BARE_CODEGEN_DEPS}
      COMMENT "bare_codegen: ${K_FAMILY} v${K_VERSION} json" VERBATIM)
    set(${K_OUT_JSON_SRCS} ${${K_OUT_JSON_SRCS}} ${outdir}/v${K_VERSION}_json.h
        ${outdir}/v${K_VERSION}_json.cc PARENT_SCOPE)
  endif()
  if(K_OUT_RANDOM_SRCS)
    add_custom_command(
      OUTPUT ${outdir}/v${K_VERSION}_random.h ${outdir}/v${K_VERSION}_random.cc
      COMMAND Python3::Interpreter ${KEEL_BARE_CODEGEN} random ${schema} --namespace ${ns}
              --outdir ${outdir} --base v${K_VERSION}_random --include-prefix protocol/${K_FAMILY}/
              --codec-header protocol/${K_FAMILY}/v${K_VERSION}.h
      DEPENDS ${schema} ${KEEL_BARE_CODEGEN_DEPS}
      COMMENT "bare_codegen: ${K_FAMILY} v${K_VERSION} random values" VERBATIM)
    set(${K_OUT_RANDOM_SRCS} ${${K_OUT_RANDOM_SRCS}} ${outdir}/v${K_VERSION}_random.h
        ${outdir}/v${K_VERSION}_random.cc PARENT_SCOPE)
  endif()
endfunction()

# keel_bare_convert(FAMILY envoy OLD 3 NEW 4 OUT_SRCS var [MANUAL T,T] [REFUSE T,T])
function(keel_bare_convert)
  cmake_parse_arguments(K "" "FAMILY;OLD;NEW;OUT_SRCS;MANUAL;REFUSE" "" ${ARGN})
  set(old ${PROJECT_SOURCE_DIR}/schemas/${K_FAMILY}/v${K_OLD}.bare)
  set(new ${PROJECT_SOURCE_DIR}/schemas/${K_FAMILY}/v${K_NEW}.bare)
  set(outdir ${KEEL_GEN_DIR}/protocol/${K_FAMILY})
  set(base v${K_OLD}_v${K_NEW})
  set(ns keel::protocol::${K_FAMILY})
  add_custom_command(
    OUTPUT ${outdir}/${base}.h ${outdir}/${base}.cc
    COMMAND Python3::Interpreter ${KEEL_BARE_CODEGEN} convert --old ${old} --new ${new}
            --old-namespace ${ns}::v${K_OLD} --new-namespace ${ns}::v${K_NEW}
            --namespace ${ns}::${base} --old-header protocol/${K_FAMILY}/v${K_OLD}.h
            --new-header protocol/${K_FAMILY}/v${K_NEW}.h --outdir ${outdir} --base ${base}
            --include-prefix protocol/${K_FAMILY}/ "--manual=${K_MANUAL}" "--refuse=${K_REFUSE}"
    DEPENDS ${old} ${new} ${KEEL_BARE_CODEGEN_DEPS}
    COMMENT "bare_codegen: ${K_FAMILY} v${K_OLD} <-> v${K_NEW} converters" VERBATIM)
  set(${K_OUT_SRCS} ${${K_OUT_SRCS}} ${outdir}/${base}.h ${outdir}/${base}.cc PARENT_SCOPE)
endfunction()
