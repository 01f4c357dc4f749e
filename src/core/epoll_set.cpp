#include "epoll_set.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace npc_scale {

EpollSet::EpollSet() {
  fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("epoll_create1 failed");
}

EpollSet::~EpollSet() { close(fd_); }

void EpollSet::watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) {
    throw std::runtime_error("epoll_ctl ADD failed");
  }
}

void EpollSet::unwatch(int fd) { epoll_ctl(fd_, EPOLL_CTL_DEL, fd, nullptr); }

}  // namespace npc_scale
