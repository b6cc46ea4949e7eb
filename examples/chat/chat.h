// The chat room actor (examples/chat/README.md): members connect over WebSocket with a
// nickname, messages are kept (last 100) and broadcast to every subscriber.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/actor.h"

namespace examples {

struct ChatMessage {
  std::string from;
  std::string text;
  int64_t at = 0;
};

struct ChatRoom {
  std::vector<ChatMessage> messages;
};

inline keel::ActorDef<ChatRoom> MakeChatRoom() {
  keel::ActorDef<ChatRoom> room("chat");
  room.event("message");
  room.event("joined");
  // Connection params: {"nickname": "..."}; anonymous without one.
  room.create_conn_state([](keel::Ctx<ChatRoom>&, const keel::Value& params) {
    const keel::Value* nick = params.is_map() ? params.Find("nickname") : nullptr;
    if (nick != nullptr && nick->is_text() && nick->as_text().size() > 32) {
      throw keel::UserError("nickname is longer than 32 characters", "invalid_nickname");
    }
    return std::string(nick != nullptr && nick->is_text() ? nick->as_text() : "anonymous");
  });
  room.on_connect([](keel::Ctx<ChatRoom>& c, keel::Conn& conn) {
    c.broadcast("joined", conn.state());
  });
  room.action("send", [](keel::Ctx<ChatRoom>& c, std::string text) {
    if (text.empty()) throw keel::UserError("empty message", "empty_message");
    std::string from = "anonymous";
    if (c.conn() != nullptr && c.conn()->state().is_text()) from = c.conn()->state().as_text();
    ChatMessage m{from, std::move(text), c.now_ms()};
    auto& log = c.state().messages;
    log.push_back(m);
    if (log.size() > 100) log.erase(log.begin());
    c.broadcast("message", m);
    return log.size();
  });
  room.action("history", [](keel::Ctx<ChatRoom>& c) { return c.state().messages; });
  return room;
}

}  // namespace examples
