// The meta-batch split by task over a group of processes: task terms that do
// not depend on which tasks share a graph, their combination in task order,
// and the trainer under a communicator, with N ranks simulated in one
// process (SimulatedRank) so that no MPI is needed.
#include <doctest/doctest.h>

#include <map>
#include <optional>

#include "kernels/cpu/parallel.hpp"
#include "meta_test_util.hpp"
#include "metatape/meta/trainer.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::Tensor;
using mt::testing::same_bits;

namespace {

constexpr mt::DType f64 = mt::DType::f64;

std::vector<Tensor> flat(const meta::TaskTerms& terms) {
  std::vector<Tensor> out{terms.losses, terms.objectives};
  out.insert(out.end(), terms.gradients.begin(), terms.gradients.end());
  return out;
}

// The configurations whose task terms are checked: every algorithm, and
// MAML++ (LSLR and the multi-step loss) on top of maml.
std::vector<std::pair<std::string, meta::MetaConfig>> configs() {
  std::vector<std::pair<std::string, meta::MetaConfig>> out;
  for (meta::Algorithm a : meta::kAlgorithms)
    out.push_back({meta::algorithm_name(a), {.algorithm = a, .inner_steps = 2, .inner_lr = 0.03}});
  out.push_back({"maml++", {.inner_steps = 2, .inner_lr = 0.03, .learned_layer_rates = true, .multi_step_loss = true}});
  return out;
}

// A problem: model, loss, parameters and a batch of five tasks.
struct Problem {
  std::string name;
  const meta::Model& model;
  meta::Loss loss;
  meta::TaskBatch batch;
};

// Task terms of slices [cuts[i], cuts[i + 1]) of the batch, concatenated.
meta::TaskTerms terms_by_slices(const Problem& p, const meta::MetaConfig& c, const meta::MetaParams& params,
                                const std::vector<std::int64_t>& cuts) {
  std::vector<meta::TaskTerms> parts;
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
    parts.push_back(meta::task_terms(p.model, p.loss, c, params, p.batch.slice(cuts[i], cuts[i + 1]), 3));
  return meta::concat_task_terms(parts);
}

// N ranks of one group in one process. Collective number k of rank r
// stores r's contribution and returns the result once every rank has
// contributed to collective k; until then it throws NotYet, the rank's work
// is rerun from its last commit (a trainer step leaves the trainer as it was
// when it throws), and by then the other ranks may have contributed. So each
// rank plays its part knowing the others' contributions ahead.
struct NotYet {};

struct Contribution {
  std::vector<Tensor> tensors;
  std::string bytes;
};

struct Rehearsal {
  int size;
  std::map<std::size_t, std::map<int, Contribution>> calls;  // collective number -> rank -> contribution
};

class SimulatedRank final : public meta::Communicator {
 public:
  SimulatedRank(std::shared_ptr<Rehearsal> shared, int rank) : shared_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return shared_->size; }
  std::string name() const override { return "simulated"; }

  std::vector<Tensor> all_reduce_sum(const std::vector<Tensor>& tensors) override {
    const auto all = exchange({tensors, ""});
    std::vector<Tensor> out = all[0].tensors;
    for (std::size_t r = 1; r < all.size(); ++r)
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = mt::add(out[i], all[r].tensors[i]);
    return out;
  }
  std::vector<Tensor> broadcast(const std::vector<Tensor>& tensors, int root) override {
    return exchange({tensors, ""})[static_cast<std::size_t>(root)].tensors;
  }
  Tensor all_gather(const Tensor& local) override {
    std::vector<Tensor> parts;
    for (const Contribution& c : exchange({{local}, ""})) parts.push_back(c.tensors[0]);
    return mt::concat(parts);
  }
  std::vector<std::string> all_gather_bytes(const std::string& local) override {
    std::vector<std::string> out;
    for (const Contribution& c : exchange({{}, local})) out.push_back(c.bytes);
    return out;
  }
  void barrier() override { (void)exchange({}); }

  void rewind() { next_ = committed_; }
  void commit() { committed_ = next_; }

 private:
  std::vector<Contribution> exchange(Contribution mine) {
    auto& call = shared_->calls[next_++];
    call[rank_] = std::move(mine);
    if (static_cast<int>(call.size()) < shared_->size) throw NotYet{};
    std::vector<Contribution> all;
    for (const auto& [r, c] : call) all.push_back(c);
    return all;
  }

  std::shared_ptr<Rehearsal> shared_;
  int rank_;
  std::size_t next_ = 0, committed_ = 0;
};

std::vector<std::shared_ptr<SimulatedRank>> simulated_group(int size) {
  auto shared = std::make_shared<Rehearsal>(Rehearsal{size, {}});
  std::vector<std::shared_ptr<SimulatedRank>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_shared<SimulatedRank>(shared, r));
  return ranks;
}

// Runs work(r) for every rank until each has got through.
void run_ranks(const std::vector<std::shared_ptr<SimulatedRank>>& ranks, const std::function<void(int)>& work) {
  std::vector<bool> done(ranks.size(), false);
  for (int round = 0; round < 1000; ++round) {
    bool all_done = true;
    for (std::size_t r = 0; r < ranks.size(); ++r) {
      if (done[r]) continue;
      ranks[r]->rewind();
      try {
        work(static_cast<int>(r));
        ranks[r]->commit();
        done[r] = true;
      } catch (const NotYet&) {
        all_done = false;
      }
    }
    if (all_done) return;
  }
  FAIL("the simulated ranks never finished");
}

meta::TrainOptions group_options(meta::MetaConfig meta_config, std::int64_t meta_batch) {
  meta::TrainOptions o;
  o.meta = meta_config;
  o.meta_batch = meta_batch;
  o.shots = 4;
  o.queries = 4;
  o.seed = 5;
  o.dtype = f64;
  return o;
}

// A sampler that throws while `failing` is set: a rank's own failure.
class FailingTasks final : public meta::TaskSampler {
 public:
  meta::TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, mt::Generator& gen,
                         mt::DType dtype) const override {
    if (failing) throw mt::IoError("the task file went away");
    return inner_.sample(tasks, support, query, gen, dtype);
  }
  std::string describe() const override { return inner_.describe(); }
  bool failing = false;

 private:
  meta::SinusoidTasks inner_;
};

}  // namespace

TEST_SUITE("distributed") {
  TEST_CASE("task terms of a batch equal those of its slices, bit for bit, for every algorithm") {
    const meta::Mlp mlp({1, 8, 8, 1});
    const meta::Conv4 conv({.in_channels = 1, .image_size = 16, .channels = 2, .classes = 2});
    mt::Generator gen(21);
    const mt::testing::RandomImageTasks images({.ways = 2, .size = 16});
    std::vector<Problem> problems;
    for (mt::DType dtype : {mt::DType::f32, f64})
      problems.push_back({std::string("sinusoid mlp ") + mt::dtype_name(dtype), mlp, meta::Loss::mse,
                          meta::SinusoidTasks().sample(5, 4, 3, gen, dtype)});
    problems.push_back({"conv4 with batch norm", conv, meta::Loss::cross_entropy, images.sample(5, 4, 9, gen, f64)});
    for (const Problem& p : problems) {
      for (const auto& [name, config] : configs()) {
        INFO(p.name << ", " << name);
        const meta::MetaParams params = [&] {  // in the batch's dtype
          const meta::MetaParams q = mt::testing::random_meta_params(p.model, config, 7);
          std::vector<Tensor> all;
          for (const Tensor& t : q.all()) all.push_back(t.to(p.batch.query_x.dtype()));
          return meta::MetaParams::from_all(all, q.model.size());
        }();
        std::vector<meta::TaskTerms> by_threads;
        for (int threads : {1, 2, 3}) {
          INFO(threads << " threads");
          const mt::testing::ThreadsFor use(threads);
          const meta::TaskTerms whole = meta::task_terms(p.model, p.loss, config, params, p.batch, 3);
          CHECK(whole.tasks() == 5);
          CHECK(whole.gradients.size() == params.all().size());
          CHECK(same_bits(flat(whole), flat(terms_by_slices(p, config, params, {0, 2, 5}))));
          CHECK(same_bits(flat(whole), flat(terms_by_slices(p, config, params, {0, 1, 2, 5}))));
          by_threads.push_back(whole);
        }
        // Whatever the chunks (2 + 3 tasks at 2 threads, 2 + 2 + 1 at 3) each
        // kernel runs unsplit: the bits of one thread.
        CHECK(same_bits(flat(by_threads[0]), flat(by_threads[1])));
        CHECK(same_bits(flat(by_threads[0]), flat(by_threads[2])));
        const double tolerance = p.batch.query_x.dtype() == f64 ? 1e-12 : 1e-5;
        // Without exact rows: one batched graph at any thread count, equal to rounding.
        const mt::testing::ThreadsFor two(2);
        CHECK(mt::testing::relative_error(
                  flat(meta::task_terms(p.model, p.loss, config, params, p.batch, 3, /*exact_rows=*/false)),
                  flat(by_threads[0])) < tolerance);
      }
    }
  }

  TEST_CASE("large inputs: meta_gradient split by task in chunks over the threads, the same bits at 1, 2, 3 threads") {
    // 26 images of 32x32 per task, in float64: one task's inputs per graph,
    // so 6 tasks are 6 chunks at 1, 2 and 3 threads, run over the threads.
    const meta::Conv4 conv({.in_channels = 1, .image_size = 32, .channels = 2, .classes = 2});
    mt::Generator gen(23);
    const meta::TaskBatch batch = mt::testing::RandomImageTasks({.ways = 2, .size = 32}).sample(6, 4, 22, gen, f64);
    for (const auto& [name, config] : configs()) {
      // The kernel algorithm and Meta-RKHS-I take one graph per task already.
      if (config.algorithm == meta::Algorithm::kernel || config.algorithm == meta::Algorithm::metarkhs1) continue;
      INFO(name);
      const meta::MetaParams params = mt::testing::random_meta_params(conv, config, 9);
      const auto step = [&] { return meta::meta_gradient(conv, meta::Loss::cross_entropy, config, params, batch, 3); };
      std::vector<meta::MetaStep> by_threads;
      for (int threads : {1, 2, 3}) {
        INFO(threads << " threads");
        const mt::testing::ThreadsFor use(threads);
        const std::uint64_t jobs = mt::kernels::cpu::pool_jobs();
        by_threads.push_back(step());
        if (threads > 1) CHECK(mt::kernels::cpu::pool_jobs() > jobs);  // the chunks did spread
      }
      for (const meta::MetaStep& other : by_threads) {
        CHECK(same_bits(other.grads, by_threads[0].grads));
        CHECK(other.meta_loss == by_threads[0].meta_loss);
      }
      {  // Three tasks at four threads: one chunk after another, kernels split.
        const meta::TaskBatch three = batch.slice(0, 3);
        const auto step_of_three = [&] {
          return meta::meta_gradient(conv, meta::Loss::cross_entropy, config, params, three, 3);
        };
        const meta::MetaStep unsplit = step_of_three();
        const mt::testing::ThreadsFor four(4);
        const meta::MetaStep split_kernels = step_of_three();
        CHECK(mt::testing::relative_error(split_kernels.grads, unsplit.grads) < 1e-12);
        CHECK(split_kernels.meta_loss == doctest::Approx(unsplit.meta_loss).epsilon(1e-12));
      }
      // It is the split step, bit for bit (its exact rows are the same here:
      // at least as many chunks as threads).
      const meta::TaskTerms terms = meta::task_terms(conv, meta::Loss::cross_entropy, config, params, batch, 3);
      const meta::MetaStepTensors split = meta::combine_task_terms(config.weighting, terms, params.model.size());
      CHECK(same_bits(split.grads, by_threads[0].grads));
      CHECK(split.meta_loss.item() == by_threads[0].meta_loss);
      // Equal to the looped graph (one task at a time, one backward) up to rounding.
      meta::MetaConfig looped = config;
      looped.task_batched = false;
      const meta::MetaStep one_by_one = meta::meta_gradient(conv, meta::Loss::cross_entropy, looped, params, batch, 3);
      CHECK(mt::testing::relative_error(one_by_one.grads, by_threads[0].grads) < 1e-12);
      CHECK(one_by_one.meta_loss == doctest::Approx(by_threads[0].meta_loss).epsilon(1e-12));
      // Captured at 2 threads (its chunks run on the capturing thread, each
      // kernel unsplit) and replayed: the eager bits.
      if (config.multi_step_loss) continue;  // a captured step refuses it
      const mt::testing::ThreadsFor two(2);
      meta::CapturedMetaGradient captured(conv, meta::Loss::cross_entropy, config);
      for (int call = 0; call < 2; ++call) CHECK(same_bits(captured(params, batch).grads, by_threads[0].grads));
    }
  }

  TEST_CASE("combined task terms equal the meta-gradient for every weighting rule") {
    const meta::Mlp mlp({1, 8, 8, 1});
    const meta::TaskBatch batch = mt::testing::sinusoid_batch(5, 4, 31);
    for (meta::TaskWeighting rule : meta::kTaskWeightings) {
      for (auto [name, config] : configs()) {
        if (rule == meta::TaskWeighting::agreement && config.multi_step_loss) continue;  // see combine_task_terms
        config.weighting = {.rule = rule, .temperature = 0.7};
        INFO(name << ", " << std::string(meta::task_weighting_name(rule)));
        const meta::MetaParams params = mt::testing::random_meta_params(mlp, config, 8);
        std::optional<meta::MetaStep> expected;
        try {
          expected = meta::meta_gradient(mlp, meta::Loss::mse, config, params, batch, 3);
        } catch (const mt::ValueError&) {  // metarkhs1's objective can be negative: no normalised weights
          CHECK(rule == meta::TaskWeighting::normalised);
        }
        const meta::TaskTerms terms = meta::task_terms(mlp, meta::Loss::mse, config, params, batch, 3);
        if (!expected) {
          CHECK_THROWS_AS(meta::combine_task_terms(config.weighting, terms, params.model.size()), mt::ValueError);
          continue;
        }
        const meta::MetaStepTensors got = meta::combine_task_terms(config.weighting, terms, params.model.size());
        CHECK(mt::testing::relative_error(got.grads, expected->grads) < 1e-12);
        CHECK(got.meta_loss.item() == doctest::Approx(expected->meta_loss).epsilon(1e-12));
        CHECK(mt::testing::relative_error(got.task_losses, mt::from_vector(expected->task_losses, {5}, f64)) < 1e-12);
        CHECK(mt::testing::relative_error(got.task_weights, mt::from_vector(expected->task_weights, {5}, f64)) < 1e-12);
      }
    }
  }

  TEST_CASE("differentiated weights and terms without task rows are refused") {
    const meta::Mlp mlp({1, 4, 1});
    const meta::MetaConfig config{.inner_steps = 1};
    const meta::MetaParams params = mt::testing::random_meta_params(mlp, config, 2);
    const meta::TaskTerms terms =
        meta::task_terms(mlp, meta::Loss::mse, config, params, mt::testing::sinusoid_batch(3, 4, 1), 0);
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] { meta::combine_task_terms({.rule = meta::TaskWeighting::softmax, .differentiate = true}, terms, 2); },
        {"softmax", "cannot be split by task"}));
    meta::TaskTerms short_rows = terms;
    short_rows.gradients[1] = mt::slice(short_rows.gradients[1], 0, 0, 2);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] { meta::combine_task_terms({}, short_rows, 4); },
                                                    {"gradient 1", "[2, 4]", "3 task rows"}));
    // Rank 1 of 2 owns tasks [2, 3) of 3: bringing all three is refused.
    auto group = simulated_group(2);
    CHECK(mt::testing::throws_error<mt::ShapeError>(
        [&] { meta::reduce_task_terms(*group[1], meta::Reduction::fast, {}, terms, 3, 4); },
        {"rank 1 brings 3 tasks", "share of 3 is 1"}));
  }

  TEST_CASE("reductions: names, and the options a communicator refuses") {
    for (meta::Reduction r : meta::kReductions) CHECK(meta::parse_reduction(meta::reduction_name(r)) == r);
    CHECK(mt::testing::throws_error<mt::ValueError>([] { meta::parse_reduction("sloppy"); },
                                                    {"sloppy", "deterministic, fast"}));
    meta::TrainOptions o = group_options({.inner_steps = 1}, 4);
    o.communicator = std::make_shared<meta::SelfCommunicator>();
    o.validate();
    // One process may replay its (split) step; a rank of several may not.
    meta::TrainOptions replay = o;
    replay.replay = true;
    replay.validate();
    replay.communicator = simulated_group(2)[0];
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { replay.validate(); }, {"2 processes", "--replay"}));
    meta::TrainOptions differentiated = o;
    differentiated.meta.weighting = {.rule = meta::TaskWeighting::softmax, .differentiate = true};
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { differentiated.validate(); }, {"--differentiate-weights"}));
    meta::TrainOptions agreement_msl = o;
    agreement_msl.meta.weighting.rule = meta::TaskWeighting::agreement;
    agreement_msl.meta.multi_step_loss = true;
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { agreement_msl.validate(); },
                                                    {"agreement", "--multi-step-loss"}));
  }

  TEST_CASE("a trainer over a SelfCommunicator repeats itself and equals the plain trainer") {
    const meta::Mlp mlp({1, 8, 8, 1});
    const meta::SinusoidTasks tasks;
    for (meta::Algorithm a : {meta::Algorithm::maml, meta::Algorithm::metasgd, meta::Algorithm::reptile}) {
      INFO(std::string(meta::algorithm_name(a)));
      meta::TrainOptions plain = group_options({.algorithm = a, .inner_steps = 2, .inner_lr = 0.03}, 5);
      plain.meta.weighting.rule = meta::TaskWeighting::softmax;
      meta::TrainOptions self = plain;
      self.communicator = std::make_shared<meta::SelfCommunicator>();
      meta::Trainer p(mlp, meta::Loss::mse, tasks, plain), s1(mlp, meta::Loss::mse, tasks, self),
          s2(mlp, meta::Loss::mse, tasks, self);
      for (int i = 0; i < 3; ++i) {
        const meta::IterationRecord rp = p.step(), r1 = s1.step(), r2 = s2.step();
        CHECK(r1.task_losses == r2.task_losses);
        CHECK(r1.meta_loss == doctest::Approx(rp.meta_loss).epsilon(1e-12));
      }
      CHECK(same_bits(s1.params().all(), s2.params().all()));
      CHECK(mt::testing::relative_error(s1.params().all(), p.params().all()) < 1e-12);
    }
  }

  TEST_CASE("N simulated ranks train as one process: bit for bit (deterministic), to rounding (fast)") {
    const meta::Mlp mlp({1, 8, 8, 1});
    const meta::SinusoidTasks tasks;
    struct Case {
      meta::MetaConfig config;
      int ranks;
      std::int64_t meta_batch;
    };
    const meta::MetaConfig softmax{
        .inner_steps = 2, .inner_lr = 0.03, .weighting = {.rule = meta::TaskWeighting::softmax}};
    const meta::MetaConfig agreement_metasgd{.algorithm = meta::Algorithm::metasgd,
                                             .inner_steps = 1,
                                             .inner_lr = 0.03,
                                             .weighting = {.rule = meta::TaskWeighting::agreement}};
    const meta::MetaConfig reptile{.algorithm = meta::Algorithm::reptile, .inner_steps = 2, .inner_lr = 0.03};
    for (const Case& c : {Case{softmax, 2, 5}, Case{softmax, 3, 5}, Case{softmax, 3, 2}, Case{agreement_metasgd, 3, 5},
                          Case{reptile, 2, 3}}) {
      const meta::TrainOptions alone = [&] {
        meta::TrainOptions o = group_options(c.config, c.meta_batch);
        o.communicator = std::make_shared<meta::SelfCommunicator>();
        return o;
      }();
      meta::Trainer one(mlp, meta::Loss::mse, tasks, alone);
      std::vector<meta::IterationRecord> one_records;
      for (int i = 0; i < 2; ++i) one_records.push_back(one.step());
      for (meta::Reduction reduction : meta::kReductions) {
        const std::string what = std::string(meta::algorithm_name(c.config.algorithm)) + " " +
                                 meta::task_weighting_name(c.config.weighting.rule) + ", " + std::to_string(c.ranks) +
                                 " ranks, " + std::to_string(c.meta_batch) + " tasks, " +
                                 meta::reduction_name(reduction);
        INFO(what);
        const auto group = simulated_group(c.ranks);
        std::vector<std::unique_ptr<meta::Trainer>> trainers;
        for (int r = 0; r < c.ranks; ++r) {
          meta::TrainOptions o = alone;
          o.communicator = group[static_cast<std::size_t>(r)];
          o.reduction = reduction;
          trainers.push_back(std::make_unique<meta::Trainer>(mlp, meta::Loss::mse, tasks, o));
        }
        std::vector<std::vector<meta::IterationRecord>> records(trainers.size());
        for (int i = 0; i < 2; ++i)
          run_ranks(group, [&](int r) { records[static_cast<std::size_t>(r)].push_back(trainers[r]->step()); });
        for (std::size_t r = 0; r < trainers.size(); ++r) {
          // Every rank holds the same parameters.
          CHECK(same_bits(trainers[r]->params().all(), trainers[0]->params().all()));
          CHECK(records[r][1].task_losses == one_records[1].task_losses);
          CHECK(records[r][1].task_weights == one_records[1].task_weights);
        }
        if (reduction == meta::Reduction::deterministic) {
          CHECK(same_bits(trainers[0]->params().all(), one.params().all()));
          CHECK(records[0][1].grad_norm == one_records[1].grad_norm);
        } else {
          CHECK(mt::testing::relative_error(trainers[0]->params().all(), one.params().all()) < 1e-6);
        }
      }
    }
  }

  TEST_CASE("a rank that fails stops every rank, naming it and the iteration, and leaves each trainer unchanged") {
    const meta::Mlp mlp({1, 8, 1});
    const meta::SinusoidTasks good;
    FailingTasks failing;
    const meta::TrainOptions base = group_options({.inner_steps = 1, .inner_lr = 0.03}, 3);
    const auto group = simulated_group(2);
    std::vector<std::unique_ptr<meta::Trainer>> trainers;
    for (int r = 0; r < 2; ++r) {
      meta::TrainOptions o = base;
      o.communicator = group[static_cast<std::size_t>(r)];
      trainers.push_back(std::make_unique<meta::Trainer>(
          mlp, meta::Loss::mse, r == 1 ? static_cast<const meta::TaskSampler&>(failing) : good, o));
    }
    run_ranks(group, [&](int r) { trainers[r]->step(); });
    const meta::Checkpoint before = trainers[0]->checkpoint("");
    failing.failing = true;
    std::vector<std::string> messages(2);
    run_ranks(group, [&](int r) {
      try {
        trainers[r]->step();
      } catch (const meta::RankFailure& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
        CHECK(e.failed_rank == 1);
      } catch (const std::exception& e) {  // the failed rank keeps its own error
        messages[static_cast<std::size_t>(r)] = std::string("own: ") + e.what();
      }
    });
    CHECK(messages[0] == "rank 1 failed at iteration 2: the task file went away");
    CHECK(messages[1] == "own: the task file went away");
    for (std::size_t r = 0; r < 2; ++r) {
      INFO("rank " << r);
      const meta::Checkpoint now = trainers[r]->checkpoint("");
      CHECK(now.iteration == 1);
      CHECK(now.task_rng_position == before.task_rng_position);
      CHECK(same_bits(now.params, before.params));
      CHECK(same_bits(now.optimizer_state, before.optimizer_state));
    }
    // Once the failure is gone the group goes on as one process does.
    failing.failing = false;
    run_ranks(group, [&](int r) { trainers[r]->step(); });
    meta::TrainOptions alone = base;
    alone.communicator = std::make_shared<meta::SelfCommunicator>();
    meta::Trainer one(mlp, meta::Loss::mse, good, alone);
    one.step();
    one.step();
    CHECK(same_bits(trainers[0]->params().all(), one.params().all()));
    CHECK(same_bits(trainers[1]->params().all(), one.params().all()));
  }

  TEST_CASE("ranks that restore different checkpoints stop; the same one continues as one process") {
    const meta::Mlp mlp({1, 8, 1});
    const meta::SinusoidTasks tasks;
    meta::TrainOptions alone = group_options({.inner_steps = 1, .inner_lr = 0.03}, 3);
    alone.communicator = std::make_shared<meta::SelfCommunicator>();
    meta::Trainer one(mlp, meta::Loss::mse, tasks, alone);
    one.step();
    const meta::Checkpoint at1 = one.checkpoint("{}");
    one.step();
    const meta::Checkpoint at2 = one.checkpoint("{}");
    one.step();

    const auto group = simulated_group(2);
    std::vector<std::unique_ptr<meta::Trainer>> trainers;
    for (int r = 0; r < 2; ++r) {
      meta::TrainOptions o = alone;
      o.communicator = group[static_cast<std::size_t>(r)];
      trainers.push_back(std::make_unique<meta::Trainer>(mlp, meta::Loss::mse, tasks, o));
    }
    std::vector<std::string> messages(2);
    run_ranks(group, [&](int r) {
      try {
        trainers[r]->restore(r == 0 ? at1 : at2, r == 0 ? "a.ckpt" : "b.ckpt");
      } catch (const mt::ValueError& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      }
    });
    for (std::size_t r = 0; r < 2; ++r) {
      CHECK(messages[r].find("differs between ranks") != std::string::npos);
      CHECK(trainers[r]->iteration() == 0);
    }
    // A file that does not fit on one rank: every rank stops, naming it.
    meta::Checkpoint broken = at2;
    broken.optimizer_steps = 1;
    run_ranks(group, [&](int r) {
      try {
        trainers[r]->restore(r == 1 ? broken : at2, "c.ckpt");
      } catch (const meta::RankFailure& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      } catch (const mt::IoError& e) {  // the rank whose file does not fit keeps its own error
        messages[static_cast<std::size_t>(r)] = std::string("own: ") + e.what();
      }
    });
    CHECK(messages[0].rfind("rank 1 failed at restoring checkpoint c.ckpt: checkpoint c.ckpt: the optimizer step", 0) ==
          0);
    CHECK(messages[1].rfind("own: checkpoint c.ckpt: the optimizer step", 0) == 0);
    run_ranks(group, [&](int r) { trainers[r]->restore(at2, "c.ckpt"); });
    run_ranks(group, [&](int r) { trainers[r]->step(); });
    CHECK(same_bits(trainers[0]->params().all(), one.params().all()));
    CHECK(same_bits(trainers[1]->params().all(), one.params().all()));
  }
}
