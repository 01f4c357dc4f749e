// The interim router: lowest in_flight/max_concurrent, caps never exceeded,
// ties rotate, retries avoid the endpoint that failed when they can.
#include <gtest/gtest.h>

#include <map>

#include "router.hpp"

using npc_scale::EndpointLoad;
using npc_scale::Router;

TEST(RouterTest, PicksTheLowestRelativeLoad) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 25, 50, true}, {2, 10, 40, true}, {3, 30, 40, true}};
  // loads: 0.5, 0.25, 0.75
  EXPECT_EQ(r.pick(eps), 1u);
}

TEST(RouterTest, NeverPicksAFullOrDisabledEndpoint) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 50, 50, true}, {2, 0, 40, false}, {3, 39, 40, true}};
  for (int i = 0; i < 10; i++) EXPECT_EQ(r.pick(eps), 2u);
  eps[2].in_flight = 40;
  EXPECT_FALSE(r.pick(eps).has_value());
  EXPECT_EQ(Router::free_capacity(eps), 0);
}

TEST(RouterTest, FillingByPickNeverExceedsCaps) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 50, true}, {2, 0, 40, true}, {3, 0, 40, true}};
  int sent = 0;
  while (auto i = r.pick(eps)) {
    eps[*i].in_flight++;
    sent++;
    ASSERT_LE(sent, 130);
  }
  EXPECT_EQ(sent, 130);
  for (const auto& e : eps) EXPECT_EQ(e.in_flight, e.max_concurrent);
}

TEST(RouterTest, TiesRotate) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 10, true}, {2, 0, 10, true}, {3, 0, 10, true}};
  std::map<size_t, int> seen;
  for (int i = 0; i < 30; i++) seen[*r.pick(eps)]++;
  EXPECT_EQ(seen.size(), 3u);
  for (auto& [idx, count] : seen) EXPECT_EQ(count, 10) << "endpoint " << idx;
}

TEST(RouterTest, RetryAvoidsTheFailedEndpointWhenItCan) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 10, true}, {2, 5, 10, true}};
  EXPECT_EQ(r.pick(eps, 1), 1u);  // gpu 1 is idle but just failed
  eps[1].in_flight = 10;
  EXPECT_EQ(r.pick(eps, 1), 0u);  // only gpu 1 has room: better than waiting
}

TEST(RouterTest, EmptyFleet) {
  Router r;
  EXPECT_FALSE(r.pick({}).has_value());
  EXPECT_EQ(Router::free_capacity({}), 0);
}
