// A runtime process hosting the chat room actor.
#include "chat/chat.h"
#include "runtime/native/serve.h"

int main(int argc, char** argv) { return keel::Serve(argc, argv, examples::MakeChatRoom()); }
