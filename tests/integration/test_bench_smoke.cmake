# Included from tests/integration/CMakeLists.txt: a smoke run of the
# benchmark (scripts/bench) that keeps it working. It starts its own parts,
# so it needs no fixture; RESOURCE_LOCK keeps it off the other integration
# tests' CPU. Labels: integration (the test command) and bench.
add_test(NAME integration.bench_smoke
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_bench_smoke.sh ${CMAKE_BINARY_DIR}
                 ${CMAKE_SOURCE_DIR})
set_tests_properties(integration.bench_smoke PROPERTIES
  LABELS "integration;bench" TIMEOUT 120 RESOURCE_LOCK parts)
