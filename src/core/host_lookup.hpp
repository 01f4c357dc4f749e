// A host name looked up without blocking the caller, for an event loop that
// must not sit out a slow DNS server: getaddrinfo_a() runs the lookup on a
// glibc helper thread (which runs no Postgres code and takes no signals) and
// the caller polls. A numeric address needs no lookup and is done at once.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

namespace npc_scale {

struct SocketAddress {
  sockaddr_storage addr;
  socklen_t len;
};

class HostLookup {
 public:
  enum class State { pending, done, failed };

  // Starts looking up host (TCP, any address family) for port.
  HostLookup(const std::string& host, int port);
  // A lookup still running is cancelled, or, if glibc has already started
  // it, left to finish and freed by a later HostLookup.
  virtual ~HostLookup();
  HostLookup(const HostLookup&) = delete;
  HostLookup& operator=(const HostLookup&) = delete;

  virtual State poll();
  // Once done: the addresses, in the resolver's order.
  const std::vector<SocketAddress>& addresses() const { return addresses_; }
  // Once failed: why, naming the host.
  const std::string& error() const { return error_; }

  // The blocking form, for callers that may wait: true and the addresses, or
  // false and *error.
  static bool resolve_now(const std::string& host, int port, std::vector<SocketAddress>* out,
                          std::string* error);

  struct Request;  // the lookup as glibc sees it (host_lookup.cpp)

 protected:
  HostLookup() = default;  // a stand-in's (tests), which sets the state itself
  State state_ = State::pending;
  std::vector<SocketAddress> addresses_;
  std::string error_;

 private:
  void finish(int rc);

  std::string host_;
  int port_ = 0;
  Request* request_ = nullptr;  // owned; see ~HostLookup
};

}  // namespace npc_scale
