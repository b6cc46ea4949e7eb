// example-todos: a runtime process hosting only the to-do list actor.
#include "runtime/native/serve.h"
#include "todos/todos.h"

int main(int argc, char** argv) { return keel::Serve(argc, argv, examples::MakeTodos()); }
