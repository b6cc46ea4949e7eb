// A runtime process hosting the scheduler actor.
#include "runtime/native/serve.h"
#include "scheduler/scheduler.h"

int main(int argc, char** argv) { return keel::Serve(argc, argv, examples::MakeScheduler()); }
