// EpollSet: one descriptor that is readable when a watched one is, also
// when that one is itself an epoll set (libcurl's), and not after unwatch.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "epoll_set.hpp"

using namespace npc_scale;

namespace {

bool readable(int fd) {
  epoll_event ev;
  int waiter = epoll_create1(0);
  epoll_event e{};
  e.events = EPOLLIN;
  epoll_ctl(waiter, EPOLL_CTL_ADD, fd, &e);
  int n = epoll_wait(waiter, &ev, 1, 0);
  close(waiter);
  return n == 1;
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int p[2];
    if (pipe(p) == 0) {
      r = p[0];
      w = p[1];
    }
  }
  ~Pipe() {
    close(r);
    close(w);
  }
};

}  // namespace

TEST(EpollSet, ReadableWhenAWatchedDescriptorIsAndNotAfterUnwatch) {
  EpollSet set;
  Pipe a, b;
  set.watch(a.r);
  set.watch(a.r);  // twice: still one registration, no error
  set.watch(b.r);
  EXPECT_FALSE(readable(set.fd()));
  ASSERT_EQ(write(b.w, "x", 1), 1);
  EXPECT_TRUE(readable(set.fd()));
  set.unwatch(b.r);
  EXPECT_FALSE(readable(set.fd())) << "b is no longer watched";
  set.unwatch(b.r);  // again: nothing happens
  ASSERT_EQ(write(a.w, "y", 1), 1);
  EXPECT_TRUE(readable(set.fd()));
}

TEST(EpollSet, WatchesAnotherEpollSetAndANewDescriptorWithAClosedOnesNumber) {
  EpollSet outer;
  int inner = epoll_create1(0);
  Pipe p;
  epoll_event e{};
  e.events = EPOLLIN;
  epoll_ctl(inner, EPOLL_CTL_ADD, p.r, &e);
  outer.watch(inner);
  EXPECT_FALSE(readable(outer.fd()));
  ASSERT_EQ(write(p.w, "z", 1), 1);
  EXPECT_TRUE(readable(outer.fd())) << "nested: the inner set's readiness shows";
  close(inner);
  EXPECT_FALSE(readable(outer.fd())) << "a closed descriptor leaves the set";
  Pipe q;  // may reuse the closed number
  outer.watch(q.r);
  ASSERT_EQ(write(q.w, "w", 1), 1);
  EXPECT_TRUE(readable(outer.fd()));
}
