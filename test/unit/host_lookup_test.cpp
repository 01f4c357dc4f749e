// Host lookups that never block their caller: a numeric address at once, a
// name on glibc's helper thread, polled until it ends.
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "host_lookup.hpp"

using namespace npc_scale;

namespace {

// Polls until the lookup ends (a wait for a condition, with a generous bound).
HostLookup::State wait_until_ended(HostLookup& l) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (l.poll() == HostLookup::State::pending && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return l.poll();
}

int port_of(const SocketAddress& a) {
  if (a.addr.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&a.addr)->sin6_port);
}

}  // namespace

TEST(HostLookupTest, ANumericAddressIsDoneAtOnce) {
  HostLookup v4("127.0.0.1", 6379);
  EXPECT_EQ(v4.poll(), HostLookup::State::done) << "no lookup, no wait";
  ASSERT_EQ(v4.addresses().size(), 1u);
  EXPECT_EQ(v4.addresses()[0].addr.ss_family, AF_INET);
  EXPECT_EQ(port_of(v4.addresses()[0]), 6379);
  HostLookup v6("::1", 6380);
  EXPECT_EQ(v6.poll(), HostLookup::State::done);
  ASSERT_EQ(v6.addresses().size(), 1u);
  EXPECT_EQ(v6.addresses()[0].addr.ss_family, AF_INET6);
  EXPECT_EQ(port_of(v6.addresses()[0]), 6380);
}

TEST(HostLookupTest, ANameIsLookedUpInTheBackground) {
  HostLookup l("localhost", 6379);
  ASSERT_EQ(wait_until_ended(l), HostLookup::State::done) << l.error();
  ASSERT_FALSE(l.addresses().empty());
  for (const SocketAddress& a : l.addresses()) {
    EXPECT_EQ(port_of(a), 6379);
    if (a.addr.ss_family == AF_INET) {
      EXPECT_EQ(ntohl(reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_addr.s_addr), INADDR_LOOPBACK);
    }
  }
  EXPECT_TRUE(l.error().empty());
}

// Lookups dropped while glibc runs them are kept until they end, then freed
// (under ASan or valgrind a mistake here is a use after free).
TEST(HostLookupTest, LookupsDroppedWhileRunningDoNotDisturbTheNext) {
  for (int i = 0; i < 20; i++) std::make_unique<HostLookup>("localhost", 1000 + i).reset();
  HostLookup l("localhost", 7000);
  ASSERT_EQ(wait_until_ended(l), HostLookup::State::done) << l.error();
  EXPECT_EQ(port_of(l.addresses()[0]), 7000) << "its own result, not a dropped one's";
}

// A name that is not a host name fails without asking a DNS server
// (glibc checks it first), so this needs no network.
TEST(HostLookupTest, AFailedLookupNamesTheHost) {
  HostLookup l("not a host!", 6379);
  EXPECT_EQ(wait_until_ended(l), HostLookup::State::failed);
  EXPECT_TRUE(l.addresses().empty());
  EXPECT_NE(l.error().find("not a host!:6379"), std::string::npos) << l.error();

  std::vector<SocketAddress> out;
  std::string error;
  EXPECT_TRUE(HostLookup::resolve_now("127.0.0.1", 1, &out, &error));
  EXPECT_EQ(out.size(), 1u);
  EXPECT_FALSE(HostLookup::resolve_now("not a host!", 6379, &out, &error));
  EXPECT_NE(error.find("not a host!:6379"), std::string::npos) << error;
}
