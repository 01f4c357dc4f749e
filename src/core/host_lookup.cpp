#include "host_lookup.hpp"

#include <netdb.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace npc_scale {

// What getaddrinfo_a() reads and writes while the lookup runs: it must stay
// where it is until the lookup has ended, whoever started it.
struct HostLookup::Request {
  std::string host, service;
  addrinfo hints{};
  gaicb cb{};
};

namespace {

// Lookups glibc was already running when their HostLookup went away.
std::vector<HostLookup::Request*>* orphans() {
  static std::vector<HostLookup::Request*> list;
  return &list;
}

void free_request(HostLookup::Request* r) {
  if (r->cb.ar_result) freeaddrinfo(r->cb.ar_result);
  delete r;
}

void reap_orphans() {
  auto& list = *orphans();
  list.erase(std::remove_if(list.begin(), list.end(),
                            [](HostLookup::Request* r) {
                              if (gai_error(&r->cb) == EAI_INPROGRESS) return false;
                              free_request(r);
                              return true;
                            }),
             list.end());
}

void copy_addresses(const addrinfo* found, std::vector<SocketAddress>* out) {
  out->clear();
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    SocketAddress s{};
    std::memcpy(&s.addr, a->ai_addr, std::min<size_t>(a->ai_addrlen, sizeof(s.addr)));
    s.len = a->ai_addrlen;
    out->push_back(s);
  }
}

std::string failure(const std::string& host, int port, int rc) {
  return "look up " + host + ":" + std::to_string(port) + ": " + gai_strerror(rc);
}

addrinfo tcp_hints(int flags) {
  addrinfo h{};
  h.ai_family = AF_UNSPEC;
  h.ai_socktype = SOCK_STREAM;
  h.ai_flags = flags;
  return h;
}

}  // namespace

HostLookup::HostLookup(const std::string& host, int port) : host_(host), port_(port) {
  reap_orphans();
  // A numeric address: no lookup, no thread.
  addrinfo hints = tcp_hints(AI_NUMERICHOST);
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc == 0) {
    copy_addresses(found, &addresses_);
    freeaddrinfo(found);
    state_ = State::done;
    return;
  }
  if (rc != EAI_NONAME) {
    finish(rc);
    return;
  }
  request_ = new Request;
  request_->host = host;
  request_->service = std::to_string(port);
  request_->hints = tcp_hints(0);
  request_->cb.ar_name = request_->host.c_str();
  request_->cb.ar_service = request_->service.c_str();
  request_->cb.ar_request = &request_->hints;
  gaicb* list[] = {&request_->cb};
  // The helper thread inherits this mask: no signal is ever delivered to it
  // (glibc blocks them there too; this does not depend on that).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = getaddrinfo_a(GAI_NOWAIT, list, 1, nullptr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // A failure may still leave the request queued (glibc queues it before
  // allocating the rest): then it runs, and is polled like any other.
  if (rc != 0 && gai_error(&request_->cb) != EAI_INPROGRESS) finish(rc);
}

HostLookup::~HostLookup() {
  if (!request_) return;
  if (gai_cancel(&request_->cb) == EAI_NOTCANCELED) {
    orphans()->push_back(request_);  // glibc is working on it: freed once it ends
  } else {
    free_request(request_);  // cancelled before it started, or ended
  }
}

HostLookup::State HostLookup::poll() {
  if (state_ == State::pending && request_) {
    int rc = gai_error(&request_->cb);
    if (rc != EAI_INPROGRESS) finish(rc);
  }
  return state_;
}

void HostLookup::finish(int rc) {
  if (rc == 0 && request_) {
    copy_addresses(request_->cb.ar_result, &addresses_);
    state_ = addresses_.empty() ? State::failed : State::done;
    if (addresses_.empty()) error_ = failure(host_, port_, EAI_NONAME);
  } else {
    state_ = State::failed;
    error_ = failure(host_, port_, rc);
  }
  if (request_) {
    free_request(request_);
    request_ = nullptr;
  }
}

bool HostLookup::resolve_now(const std::string& host, int port, std::vector<SocketAddress>* out,
                             std::string* error) {
  addrinfo hints = tcp_hints(0);
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    *error = failure(host, port, rc);
    return false;
  }
  copy_addresses(found, out);
  freeaddrinfo(found);
  return true;
}

}  // namespace npc_scale
