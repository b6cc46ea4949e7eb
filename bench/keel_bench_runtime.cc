// keel-bench-runtime: the runtime process keel_bench starts for W5 (SQLite via actions).
// It hosts the `sqlbench` actor (bench/actors/sqlbench.h) next to the `counter` example,
// and selects its SQLite backend like any runtime: KEEL_SQLITE_BACKEND=local|remote. With
// --with-engine it runs the engine in its process (keel_bench --envoy-transport in-process).
#include "actors/sqlbench.h"
#include "counter/counter.h"
#include "runtime/native/with_engine.h"

int main(int argc, char** argv) {
  return keel::ServeWithEngine(argc, argv, examples::MakeCounter(), keel::bench::MakeSqlBench());
}
