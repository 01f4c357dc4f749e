// An epoll descriptor that holds other descriptors, so that a wait on one
// socket covers several: the dispatcher's WaitEventSet watches this one,
// which holds libcurl's epoll set always and Redis's connection while an L2
// ask is pending.
#pragma once

namespace npc_scale {

class EpollSet {
 public:
  EpollSet();
  ~EpollSet();
  EpollSet(const EpollSet&) = delete;
  EpollSet& operator=(const EpollSet&) = delete;

  // Readable when a watched descriptor is.
  int fd() const { return fd_; }
  // Watches `fd` for readability; one already watched stays as it is. A
  // closed descriptor leaves the set by itself, so a new one with the same
  // number is watched again by calling this.
  void watch(int fd);
  // Not watched (or closed since): nothing happens.
  void unwatch(int fd);

 private:
  int fd_ = -1;
};

}  // namespace npc_scale
