// What the communicators share without MPI: task_range's split of a
// meta-batch over ranks, SelfCommunicator's collectives, and the two
// rank-agreement helpers, on one process and on a stand-in for N ranks whose
// all_gather_bytes returns what the other ranks would have sent.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "metatape/meta/communicator.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;

namespace {

// Rank `rank` of a group whose other ranks sent `others` (rank order, this
// rank's entry replaced by what it passes): enough for the helpers, which
// only all-gather bytes. The tensor collectives are not needed here.
class ScriptedCommunicator final : public meta::Communicator {
 public:
  ScriptedCommunicator(int rank, std::vector<std::string> others) : rank_(rank), others_(std::move(others)) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(others_.size()); }
  std::string name() const override { return "scripted"; }
  std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>&) override { throw mt::Error("not scripted"); }
  std::vector<Tensor> broadcast(const std::vector<Tensor>&, int) override { throw mt::Error("not scripted"); }
  Tensor all_gather(const Tensor&) override { throw mt::Error("not scripted"); }
  std::vector<std::string> all_gather_bytes(const std::string& local) override {
    std::vector<std::string> all = others_;
    all[static_cast<std::size_t>(rank_)] = local;
    return all;
  }
  void barrier() override {}

 private:
  int rank_;
  std::vector<std::string> others_;
};

}  // namespace

TEST_SUITE("communicator") {
  TEST_CASE("task_range covers every task once, in rank order, balanced to one task") {
    for (int size = 1; size <= 5; ++size) {
      for (std::int64_t tasks : {0, 1, 2, 3, 4, 5, 6, 7, 10, 32, 33}) {
        CAPTURE(size);
        CAPTURE(tasks);
        std::int64_t next = 0, smallest = tasks, largest = 0;
        for (int rank = 0; rank < size; ++rank) {
          const meta::TaskRange r = meta::task_range(tasks, rank, size);
          CHECK(r.begin == next);  // contiguous and in rank order
          CHECK(r.end >= r.begin);
          next = r.end;
          smallest = std::min(smallest, r.count());
          largest = std::max(largest, r.count());
        }
        CHECK(next == tasks);            // every task once
        CHECK(largest - smallest <= 1);  // balanced
        CHECK(largest == (tasks + size - 1) / size);
      }
    }
  }

  TEST_CASE("task_range: the first B mod N ranks take one task more; ranks past B take none") {
    // B = 5 over 3 ranks: 2, 2, 1.
    CHECK(meta::task_range(5, 0, 3).begin == 0);
    CHECK(meta::task_range(5, 0, 3).end == 2);
    CHECK(meta::task_range(5, 1, 3).begin == 2);
    CHECK(meta::task_range(5, 1, 3).end == 4);
    CHECK(meta::task_range(5, 2, 3).begin == 4);
    CHECK(meta::task_range(5, 2, 3).end == 5);
    // B = 2 over 3 ranks: the last rank gets an empty range at the end.
    CHECK(meta::task_range(2, 2, 3).count() == 0);
    CHECK(meta::task_range(2, 2, 3).begin == 2);
    // B = 8 over 4: two each.
    for (int r = 0; r < 4; ++r) CHECK(meta::task_range(8, r, 4).count() == 2);
  }

  TEST_CASE("task_range rejects a rank outside the group and a negative task count") {
    CHECK_THROWS_AS(meta::task_range(4, 3, 3), mt::ValueError);
    CHECK_THROWS_AS(meta::task_range(4, -1, 3), mt::ValueError);
    CHECK_THROWS_AS(meta::task_range(4, 0, 0), mt::ValueError);
    CHECK_THROWS_AS(meta::task_range(-1, 0, 2), mt::ValueError);
    CHECK(mt::testing::throws_error([] { meta::task_range(4, 3, 3); }, {"rank 3"}));
  }

  TEST_CASE("SelfCommunicator: one rank whose collectives return its input, detached") {
    meta::SelfCommunicator self;
    CHECK(self.rank() == 0);
    CHECK(self.size() == 1);
    CHECK(self.name() == "self");
    const Tensor a = mt::from_vector({1.5, -2, 3}, {3}, DType::f64);
    Tensor b = mt::from_vector({1, 2, 3, 4}, {2, 2});
    b.requires_grad_();
    const std::vector<Tensor> sums = self.all_reduce_sum({a, b});
    REQUIRE(sums.size() == 2);
    CHECK(sums[0].to_vector() == a.to_vector());
    CHECK(sums[0].dtype() == DType::f64);
    CHECK(sums[1].shape() == b.shape());
    CHECK(sums[1].to_vector() == b.to_vector());
    CHECK_FALSE(sums[1].requires_grad());  // as from MPI: no tape across processes
    const std::vector<Tensor> sent = self.broadcast({a}, 0);
    CHECK(sent[0].to_vector() == a.to_vector());
    const Tensor gathered = self.all_gather(b);
    CHECK(gathered.shape() == b.shape());
    CHECK(gathered.to_vector() == b.to_vector());
    CHECK_FALSE(gathered.requires_grad());
    CHECK(self.all_gather(mt::zeros({0, 3})).shape() == mt::Shape{0, 3});
    CHECK(self.all_gather_bytes("abc") == std::vector<std::string>{"abc"});
    CHECK(self.all_gather_bytes(std::string("\0x", 2)) == std::vector<std::string>{std::string("\0x", 2)});
    self.barrier();
  }

  TEST_CASE("SelfCommunicator refuses a root other than 0, a scalar to gather and an undefined tensor") {
    meta::SelfCommunicator self;
    CHECK_THROWS_AS(self.broadcast({mt::ones({2})}, 1), meta::CommunicatorError);
    CHECK(mt::testing::throws_error([&] { self.broadcast({mt::ones({2})}, 1); }, {"root 1"}));
    CHECK_THROWS_AS(self.all_gather(mt::scalar(1)), mt::ShapeError);
    CHECK_THROWS_AS(self.all_reduce_sum({mt::ones({2}), Tensor()}), mt::ValueError);
    CHECK(mt::testing::throws_error([&] { self.all_reduce_sum({mt::ones({2}), Tensor()}); }, {"tensor 1"}));
  }

  TEST_CASE("raise_if_any_rank_failed on one process: silent on success, RankFailure naming rank 0 otherwise") {
    meta::SelfCommunicator self;
    CHECK_NOTHROW(meta::raise_if_any_rank_failed(self, "", "iteration 3"));
    try {
      meta::raise_if_any_rank_failed(self, "loss is NaN", "iteration 3");
      FAIL("no RankFailure");
    } catch (const meta::RankFailure& e) {
      CHECK(e.failed_rank == 0);
      CHECK(std::string(e.what()) == "rank 0 failed at iteration 3: loss is NaN");
    }
  }

  TEST_CASE("raise_if_any_rank_failed names the lowest failing rank and counts the others, on every rank") {
    // Status byte '0' for success, '1' + message for a failure, as the helper sends.
    const std::vector<std::string> sent = {"0", "0", "1disk full", "0", "1out of memory"};
    for (int rank = 0; rank < 5; ++rank) {
      CAPTURE(rank);
      ScriptedCommunicator c(rank, sent);
      const std::string local =
          sent[static_cast<std::size_t>(rank)] == "0" ? "" : sent[static_cast<std::size_t>(rank)].substr(1);
      try {
        meta::raise_if_any_rank_failed(c, local, "iteration 7");
        FAIL("no RankFailure");
      } catch (const meta::RankFailure& e) {
        CHECK(e.failed_rank == 2);
        CHECK(std::string(e.what()) == "rank 2 failed at iteration 7: disk full (rank 4 failed too)");
      }
    }
    // A failure with an empty message still counts (the status byte carries it).
    ScriptedCommunicator quiet(0, {"0", "1"});
    CHECK_THROWS_AS(meta::raise_if_any_rank_failed(quiet, "", "start"), meta::RankFailure);
    ScriptedCommunicator fine(1, {"0", "0", "0"});
    CHECK_NOTHROW(meta::raise_if_any_rank_failed(fine, "", "start"));
  }

  TEST_CASE("require_same_on_all_ranks: silent when all agree, ValueError grouping the ranks by value otherwise") {
    meta::SelfCommunicator self;
    CHECK_NOTHROW(meta::require_same_on_all_ranks(self, "the configuration", "lr=0.1"));
    // What the helper all-gathers is a hash; rank 1 computes its own.
    const std::string h = [] {
      ScriptedCommunicator probe(0, {"", "zzz"});
      const std::string m =
          mt::testing::throws_error([&] { meta::require_same_on_all_ranks(probe, "x", "lr=0.1"); }).message;
      // "x differs between ranks: rank 0 has <hash>; rank 1 has zzz"
      const std::size_t at = m.find("rank 0 has ") + 11;
      return m.substr(at, 16);
    }();
    REQUIRE(h.size() == 16);
    ScriptedCommunicator same(1, {h, "", h});
    CHECK_NOTHROW(meta::require_same_on_all_ranks(same, "the configuration", "lr=0.1"));
    ScriptedCommunicator differ(2, {h, "bbbb", "", "bbbb"});
    const std::string m = mt::testing::throws_error([&] {
                            meta::require_same_on_all_ranks(differ, "the configuration", "lr=0.1");
                          }).message;
    CHECK(m == "the configuration differs between ranks: ranks 0, 2 have " + h + "; ranks 1, 3 have bbbb");
    CHECK_THROWS_AS(meta::require_same_on_all_ranks(differ, "the configuration", "lr=0.1"), mt::ValueError);
    // A different value gives a different hash.
    ScriptedCommunicator other(1, {h, ""});
    CHECK_THROWS_AS(meta::require_same_on_all_ranks(other, "the configuration", "lr=0.2"), mt::ValueError);
  }

  TEST_CASE("ranks_by_value and describe_tensors: the words of disagreement messages") {
    CHECK(meta::ranks_by_value({"a"}) == "rank 0 has a");
    CHECK(meta::ranks_by_value({"a", "b", "a", "c", "b"}) == "ranks 0, 2 have a; ranks 1, 4 have b; rank 3 has c");
    CHECK(meta::ranks_by_value({}).empty());
    CHECK(meta::describe_tensors({}) == "0 tensors");
    CHECK(meta::describe_tensors({mt::zeros({3, 4}), Tensor(), mt::scalar(1, DType::f64)}) ==
          "3 tensors: f32 [3, 4], undefined, f64 []");
    CHECK(meta::describe_tensors({mt::from_indices({1, 2}, {2})}) == "1 tensor: i64 [2]");
  }
}
