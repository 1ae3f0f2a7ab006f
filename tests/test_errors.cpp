// Every error path: the right type, a message naming the op and what was
// wrong, and no abort.
#include <doctest/doctest.h>

#include <sstream>
#include <string>

#include "metatape/engine.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;
using mt::testing::throws_error;

namespace {

constexpr DType f64 = DType::f64;

}  // namespace

TEST_SUITE("errors") {
  TEST_CASE("shape mismatches name the op and both shapes") {
    const Tensor a = mt::ones({2, 3}, f64), b = mt::ones({4, 3}, f64);
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::add(a, b); }).message ==
          "add: shapes [2, 3] and [4, 3] are not broadcastable");
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::matmul(a, b); },
                                       {"matmul: [2, 3] @ [4, 3]: inner dimensions 3 and 4 differ"}));
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::reshape(a, {4}); },
                                       {"reshape: cannot reshape [2, 3] (6 elements) to [4] (4 elements)"}));
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::matmul(mt::ones({3}, f64), a); }, {"rank >= 2"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::concat({a, mt::ones({2, 2, 1}, f64)}, 0);
        },
        {"concat: input 1 has shape [2, 2, 1]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::mse_loss(a, mt::ones({3, 2}, f64));
        },
        {"mse_loss: prediction [2, 3] and target [3, 2] differ in shape"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::conv2d(mt::ones({1, 2, 5, 5}, f64), mt::ones({4, 3, 3, 3}, f64));
        },
        {"conv2d: weight [4, 3, 3, 3] does not match"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::conv2d(mt::ones({1, 1, 2, 2}, f64), mt::ones({1, 1, 3, 3}, f64));
        },
        {"does not fit a 2x2 input"}));
    CHECK(throws_error<mt::ShapeError>([] { (void)mt::zeros({1, 1, 1, 1, 1, 1}); }, {"exceeds the maximum rank 5"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::batch_norm(mt::ones({4, 3}, f64), mt::ones({2}, f64), mt::ones({2}, f64));
        },
        {"batch_norm: gamma and beta must be [3]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::batch_norm(mt::ones({4, 3}, f64), mt::ones({3}, f64), mt::ones({2}, f64));
        },
        {"batch_norm: gamma [3] and beta [2] differ in shape"}));
    // The pooled batch norm names itself, also for the checks it shares with batch_norm.
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::batch_norm_max_pool2d(mt::ones({4, 3, 2, 2}, f64), mt::ones({3}, f64), mt::ones({2}, f64));
        },
        {"batch_norm_max_pool2d: gamma [3] and beta [2] differ in shape"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::batch_norm_max_pool2d(mt::ones({4, 3, 2}, f64), mt::ones({3}, f64), mt::ones({3}, f64));
        },
        {"batch_norm_max_pool2d: x must be [groups..., N, C, H, W]", "[4, 3, 2]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::batch_norm_max_pool2d(mt::ones({4, 3, 1, 5}, f64), mt::ones({3}, f64), mt::ones({3}, f64));
        },
        {"batch_norm_max_pool2d", "does not fit a 1x5 input"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::from_vector({1, 2, 3}, {2, 2});
        },
        {"3 values do not fill shape [2, 2]"}));
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::squeeze(a, 0); }, {"is not of size 1"}));
  }

  TEST_CASE("dtype mismatches name the op and both dtypes") {
    const Tensor a = mt::ones({2}, DType::f32), b = mt::ones({2}, f64);
    CHECK(throws_error<mt::DTypeError>([&] { (void)mt::mul(a, b); }, {"mul: dtypes f32 and f64 differ"}));
    CHECK(throws_error<mt::DTypeError>([&] { (void)mt::add_scaled(a, b, 0.5); },
                                       {"add_scaled: dtypes f32 and f64 differ"}));
    CHECK(throws_error<mt::DTypeError>([&] { (void)mt::exp(mt::arange(3, DType::i64)); },
                                       {"exp: input 0 must be f32 or f64, not i64"}));
    CHECK(throws_error<mt::DTypeError>([&] { (void)mt::gather_rows(b, mt::ones({2}, f64)); },
                                       {"gather_rows: input 1 (the index) must be i64, not f64"}));
    CHECK(throws_error<mt::DTypeError>([&] { (void)b.data<float>(); }, {"data: the tensor is f64, not f32"}));
    CHECK(throws_error<mt::DTypeError>(
        [] {
          Tensor i = mt::arange(3, DType::i64);
          i.requires_grad_();
        },
        {"only f32 and f64 tensors can be differentiated"}));
    CHECK(throws_error<mt::DTypeError>(
        [&] {
          (void)mt::cross_entropy(mt::ones({2, 3}, f64), b);
        },
        {"cross_entropy: labels must be i64"}));
  }

  TEST_CASE("a device this build or machine lacks is refused by name, with the reason") {
    std::string reason;
    if (mt::cuda_available(&reason)) return;  // the GPU suite covers this machine
    CHECK(!reason.empty());
    CHECK(throws_error<mt::DeviceError>([] { (void)mt::ones({2}).to(mt::Device::cuda); },
                                        {"cannot allocate on cuda", reason}));
    CHECK(throws_error<mt::DeviceError>([] { (void)mt::zeros({3}, mt::DType::f32, mt::Device::cuda); },
                                        {"cannot allocate on cuda"}));
    CHECK(throws_error<mt::DeviceError>(
        [] { mt::CapturedStep step([](const std::vector<Tensor>& in) { return in; }, {mt::ones({2})}); },
        {"CapturedStep: a CUDA graph needs"}));
    CHECK(throws_error<mt::DeviceError>([] { mt::synchronize(); }, {"synchronize: cannot use the GPU", reason}));
    CHECK_NOTHROW(mt::synchronize(mt::Device::cpu));
  }

  TEST_CASE("bad values: axes, indices, labels, options") {
    const Tensor x = mt::ones({3, 4}, f64);
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::sum(x, {2}); }, {"sum: axis 2 is out of range for rank 2"}));
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::sum(x, {1, -1}); }, {"listed twice"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          (void)mt::gather_rows(x, mt::from_indices({0, 3}, {2}));
        },
        {"gather_rows: index 3 at position 1 is out of range for 3 rows"}));
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::take(x, mt::from_indices({-1}, {1})); },
                                       {"take: index -1 at position 0 is out of range for 12 elements"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          (void)mt::cross_entropy(x, mt::from_indices({0, 4, 1}, {3}));
        },
        {"cross_entropy: label 4 at row 1 is out of range for 4 classes"}));
    CHECK(throws_error<mt::ValueError>([&] {
            (void)mt::take_along_last(mt::ones({2, 3, 4}, f64), mt::from_indices({0, 1, 2, 3, -1, 0}, {2, 3}));
          }).message == "take_along_last: label -1 at row 1 of slice 1 is out of range for 4 classes");
    CHECK(throws_error<mt::ShapeError>([&] {
            (void)mt::take_along_last(x, mt::from_indices({0, 1}, {2}));
          }).message == "take_along_last: labels have shape [2], expected [3] for [3, 4]");
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::slice(x, 0, 2, 5); }, {"slice: range 2..5 does not fit"}));
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::permute(x, {0, 0}); }, {"appears twice"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          (void)mt::conv2d(mt::ones({1, 1, 4, 4}, f64), mt::ones({1, 1, 3, 3}, f64), {.stride = 0});
        },
        {"conv2d: stride must be >= 1"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          (void)mt::max_pool2d(mt::ones({1, 1, 4, 4}, f64), {.kernel = 2, .stride = 1, .padding = 2});
        },
        {"padding <= kernel / 2"}));
    // A window wider than the padded input, and an input with no pixels.
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::max_pool2d(mt::ones({1, 1, 1, 4}, f64), {.kernel = 2});
        },
        {"max_pool2d: a 2x2 window with padding 0 does not fit a 1x4 input"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::max_pool2d(mt::ones({1, 2, 0, 4}, f64), {.kernel = 2, .stride = 1, .padding = 1});
        },
        {"max_pool2d: the input [1, 2, 0, 4] has no pixels to pool"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::conv2d(mt::ones({1, 1, 1, 4}, f64), mt::ones({1, 1, 4, 4}, f64), {.stride = 3, .padding = 1});
        },
        {"conv2d: a 4x4 window with padding 1 does not fit a 1x4 input"}));
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::add(x, Tensor()); }, {"add: input 1 is an undefined tensor"}));
    CHECK(throws_error<mt::ValueError>([] { mt::set_num_threads(0); }, {"threads must be >= 1"}));
    mt::Generator gen(1);
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::normal({2}, 0, -1, gen); }, {"stddev must be >= 0"}));
    CHECK(throws_error<mt::ShapeError>([&] { (void)x.item(); }, {"item: the tensor has shape [3, 4]"}));
  }

  TEST_CASE("grad of a non-scalar output without a seed") {
    mt::TapeScope scope;
    Tensor x = mt::ones({3}, f64);
    x.requires_grad_();
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(x * 2.0, x); }).message ==
          "grad: output 0 has shape [3]; a non-scalar output needs a seed gradient of that shape");
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::grad({x * 2.0}, {x}, {mt::ones({2}, f64)}); },
                                       {"grad: seed 0 has shape [2] but output 0 has shape [3]"}));
    CHECK(throws_error<mt::GradError>(
        [&] {
          (void)mt::grad({x * 2.0}, {x}, {mt::ones({3}, f64), x});
        },
        {"2 seeds given for 1 outputs"}));
  }

  TEST_CASE("grad with respect to something that was not recorded") {
    mt::TapeScope scope;
    Tensor x = mt::ones({3}, f64), unmarked = mt::ones({3}, f64);
    x.requires_grad_();
    const Tensor y = mt::sum(x * unmarked);
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(y, unmarked); }).message ==
          "grad: input 0 was not recorded on the tape: mark it with requires_grad_() before computing the outputs");
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(mt::sum(unmarked), x); },
                                      {"grad: output 0 was not recorded on the tape"}));
    Tensor other = mt::ones({2}, f64);
    other.requires_grad_();
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(y, other); }).message ==
          "grad: the outputs do not depend on input 0; pass allow_unused to get a zero gradient for it");
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(std::vector<Tensor>{}, std::vector<Tensor>{x}); },
                                      {"grad: no outputs given"}));
  }

  TEST_CASE("using a tensor from a released scope") {
    Tensor x = mt::ones({2}, f64), y;
    {
      mt::TapeScope scope;
      x.requires_grad_();
      y = x * 3.0;
    }
    const std::string expected =
        "was recorded in a TapeScope that has since been released; detach() it to use it as a constant";
    CHECK(throws_error<mt::GradError>([&] { (void)mt::grad(mt::sum(y), x); }, {expected}));
    CHECK(throws_error<mt::GradError>([&] { (void)(y + 1.0); }, {"shift: input 0 " + expected}));
    // The values survive, and a detached copy is an ordinary constant.
    CHECK(y.to_vector() == std::vector<double>{3, 3});
    CHECK((y.detach() + 1.0).to_vector() == std::vector<double>{4, 4});
    {
      mt::NoGradScope no_grad;  // without recording, a stale handle is just its values
      CHECK((y * 2.0).to_vector() == std::vector<double>{6, 6});
    }
  }

  TEST_CASE("the matcher fails on no error, another type or a missing part, and says which") {
    const auto none = throws_error<mt::ValueError>([] {});
    CHECK(!none.ok);
    CHECK(none.message == "(nothing was thrown)");
    const auto other = throws_error<mt::ValueError>([] { throw mt::ShapeError("add: [2] and [3]"); });
    CHECK(!other.ok);
    CHECK(other.message == "(ShapeError instead: add: [2] and [3])");
    const auto missing = throws_error<mt::ShapeError>([] { throw mt::ShapeError("add: [2] and [3]"); }, {"add", "[4]"});
    CHECK(!missing.ok);
    std::ostringstream shown;
    shown << missing;
    CHECK(shown.str() == "wanted ShapeError, got \"add: [2] and [3]\", looked for \"add\", \"[4]\"");
    CHECK(throws_error([] { throw mt::ShapeError("add: [2] and [3]"); }, {"add", "[3]"}));  // any metatape error
  }
}
