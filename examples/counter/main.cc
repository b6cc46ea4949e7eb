// A runtime process hosting the counter actor. Settings: see `--help` (KEEL_ENDPOINT,
// KEEL_TOKEN, KEEL_NAMESPACE, KEEL_POOL).
#include "counter/counter.h"
#include "runtime/native/serve.h"

int main(int argc, char** argv) { return keel::Serve(argc, argv, examples::MakeCounter()); }
