// keel::net internal: the byte stream under every HTTP and WebSocket connection, server or
// client side — a TCP connection, or a Unix domain socket (a runtime on the engine's host:
// no TCP stack between them, ~20 µs less per loopback round trip here). One type for both,
// Asio's generic stream protocol, so everything above the socket is written once.
#pragma once

#include <string>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace keel::net::internal {

using StreamProtocol = boost::asio::generic::stream_protocol;
using Stream = boost::beast::basic_stream<StreamProtocol, boost::asio::any_io_executor,
                                          boost::beast::unlimited_rate_policy>;
using StreamAcceptor = boost::asio::basic_socket_acceptor<StreamProtocol>;

// True for a Unix domain socket endpoint.
bool IsLocal(const StreamProtocol::endpoint& ep);
// "ip:port" ("[v6]:port"), or "unix:PATH" ("unix:" for an unnamed peer).
std::string EndpointText(const StreamProtocol::endpoint& ep);
std::string EndpointText(const boost::asio::ip::tcp::endpoint& ep);
// The TCP endpoint inside a generic one (an AF_INET/AF_INET6 address).
boost::asio::ip::tcp::endpoint TcpEndpoint(const StreamProtocol::endpoint& ep);

// What a connected socket holds for reading, looked at without consuming it: bytes
// (kSending), nothing yet (kQuiet), or its end — the peer closed or reset it, or the
// socket failed (kGone). A completed wait for readability does not mean one of the first
// and last: the reactor may report an edge for bytes a read had already taken, so a watch
// for a leaving peer asks this before it believes one left.
enum class PeerState { kSending, kQuiet, kGone };
PeerState PeekPeer(int fd);

}  // namespace keel::net::internal
