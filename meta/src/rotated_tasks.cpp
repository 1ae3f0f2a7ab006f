// Few-shot episodes over rotated image classes, and the Fashion-MNIST split.
#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

#include "metatape/meta/datasets.hpp"

namespace metatape::meta {

template <class T>
void rotate_image(const std::uint8_t* in, std::int64_t s, int quarter_turns, T* out) {
  const T scale = T(1) / T(255);
  const std::int64_t last = s - 1;
  for (std::int64_t i = 0; i < s; ++i)
    for (std::int64_t j = 0; j < s; ++j) {
      std::int64_t r = i, c = j;  // the source pixel of out[i][j]
      switch (quarter_turns & 3) {
        case 1:
          r = j, c = last - i;
          break;
        case 2:
          r = last - i, c = last - j;
          break;
        case 3:
          r = last - j, c = i;
          break;
        default:
          break;
      }
      out[i * s + j] = static_cast<T>(in[r * s + c]) * scale;
    }
}
template void rotate_image<float>(const std::uint8_t*, std::int64_t, int, float*);
template void rotate_image<double>(const std::uint8_t*, std::int64_t, int, double*);

RotatedImageTasks::RotatedImageTasks(std::shared_ptr<const ImageDataset> data, const RotatedImageTaskOptions& options)
    : data_(std::move(data)), options_(options) {
  const std::string who = options_.name + ": ";
  if (!data_) throw ValueError(who + "no data set");
  if (data_->rows != data_->cols || data_->rows < 1)
    throw ValueError(who + "rotations need square images, got " + std::to_string(data_->rows) + "x" +
                     std::to_string(data_->cols));
  if (data_->count < 0 || data_->labels.size() != static_cast<std::size_t>(data_->count) ||
      data_->pixels.size() != static_cast<std::size_t>(data_->count * data_->rows * data_->cols))
    throw ValueError(who + "the data set's buffers do not match its " + std::to_string(data_->count) + " images of " +
                     std::to_string(data_->rows) + "x" + std::to_string(data_->cols) + " (" +
                     std::to_string(data_->labels.size()) + " labels, " + std::to_string(data_->pixels.size()) +
                     " pixels)");
  std::map<std::int64_t, std::size_t> slot;  // base class -> its position in base_classes
  for (std::int64_t b : options_.base_classes) {
    if (!slot.emplace(b, members_.size()).second)
      throw ValueError(who + "base class " + std::to_string(b) + " is listed twice");
    members_.emplace_back();
  }
  // The index, built once: per base class, the images that carry its label
  // (a map lookup per image: Omniglot has 32,460 images and 1,200 classes).
  for (std::int64_t i = 0; i < data_->count; ++i) {
    const auto it = slot.find(data_->labels[static_cast<std::size_t>(i)]);
    if (it != slot.end()) members_[it->second].push_back(i);
  }
  smallest_class_ = data_->count;
  for (std::size_t b = 0; b < members_.size(); ++b) {
    if (members_[b].empty())
      throw ValueError(who + "base class " + std::to_string(options_.base_classes[b]) + " has no image");
    smallest_class_ = std::min<std::int64_t>(smallest_class_, static_cast<std::int64_t>(members_[b].size()));
    for (int q = 0; q < 4; ++q) classes_.push_back({options_.base_classes[b], q});
  }
  if (options_.ways < 1 || options_.ways > classes())
    throw ValueError(who + "ways must be in 1.." + std::to_string(classes()) + " (the rotated classes), got " +
                     std::to_string(options_.ways));
}

std::string RotatedImageTasks::describe() const {
  return options_.name + " (" + std::to_string(options_.ways) + "-way, " + std::to_string(classes()) +
         " rotated classes)";
}

namespace {

// m distinct draws from 0..n-1 in random order: Floyd's subset, then a
// shuffle (Floyd's subset is uniform but its order is not). O(m²), with m the
// few images of one class in an episode.
std::vector<std::int64_t> draw_distinct(std::int64_t n, std::int64_t m, Generator& gen) {
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(m));
  for (std::int64_t j = n - m; j < n; ++j) {
    const std::int64_t t = gen.below(j + 1);
    out.push_back(std::find(out.begin(), out.end(), t) == out.end() ? t : j);
  }
  for (std::int64_t i = m - 1; i > 0; --i)
    std::swap(out[static_cast<std::size_t>(i)], out[static_cast<std::size_t>(gen.below(i + 1))]);
  return out;
}

}  // namespace

TaskBatch RotatedImageTasks::sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                                    DType dtype) const {
  const std::string who = options_.name + ": ";
  if (tasks < 1 || support < 1 || query < 1)
    throw ValueError(who + "need at least one task, one shot and one query per class, got " + std::to_string(tasks) +
                     " tasks, " + std::to_string(support) + " shots, " + std::to_string(query) + " queries");
  if (support > smallest_class_ || query > smallest_class_ - support)  // no overflow for huge counts
    throw ValueError(who + std::to_string(support) + " shots + " + std::to_string(query) +
                     " queries per class exceed the " + std::to_string(smallest_class_) +
                     " images of the smallest class");
  if (dtype != DType::f32 && dtype != DType::f64)
    throw DTypeError(who + "images are f32 or f64, got " + std::string(dtype_name(dtype)));
  const std::int64_t n = options_.ways, s = data_->rows, pixels = s * s;
  TaskBatch out{empty({tasks, n * support, 1, s, s}, dtype), Tensor(), empty({tasks, n * query, 1, s, s}, dtype),
                Tensor()};
  std::vector<std::int64_t> support_y, query_y;
  for (std::int64_t t = 0; t < tasks; ++t) {
    const std::vector<std::int64_t> chosen = draw_distinct(classes(), n, gen);
    for (std::int64_t j = 0; j < n; ++j) {
      const RotatedClass& c = classes_[static_cast<std::size_t>(chosen[static_cast<std::size_t>(j)])];
      const std::vector<std::int64_t>& pool =
          members_[static_cast<std::size_t>(chosen[static_cast<std::size_t>(j)] / 4)];
      const std::vector<std::int64_t> picks =
          draw_distinct(static_cast<std::int64_t>(pool.size()), support + query, gen);
      for (std::int64_t k = 0; k < support + query; ++k) {
        const bool in_support = k < support;
        // Example k of class j sits at k·N + j, so example i has label i mod N.
        const std::int64_t row = t * n * (in_support ? support : query) + (in_support ? k : k - support) * n + j;
        const std::uint8_t* image = data_->image(pool[static_cast<std::size_t>(picks[static_cast<std::size_t>(k)])]);
        Tensor& x = in_support ? out.support_x : out.query_x;
        if (dtype == DType::f32)
          rotate_image(image, s, c.quarter_turns, x.data<float>() + row * pixels);
        else
          rotate_image(image, s, c.quarter_turns, x.data<double>() + row * pixels);
      }
    }
    for (std::int64_t i = 0; i < n * support; ++i) support_y.push_back(i % n);
    for (std::int64_t i = 0; i < n * query; ++i) query_y.push_back(i % n);
  }
  out.support_y = from_indices(support_y, {tasks, n * support});
  out.query_y = from_indices(query_y, {tasks, n * query});
  return out;
}

std::vector<std::int64_t> fashion_mnist_base_classes(FewShotSplit split) {
  return split == FewShotSplit::train ? std::vector<std::int64_t>{0, 1, 2, 3, 4, 5}
                                      : std::vector<std::int64_t>{6, 7, 8, 9};
}

std::shared_ptr<const ImageDataset> load_fashion_mnist(const std::string& directory) {
  const std::filesystem::path dir(directory);
  auto data = std::make_shared<ImageDataset>();
  for (const char* prefix : {"train", "t10k"}) {
    const std::string images = (dir / (std::string(prefix) + "-images-idx3-ubyte.gz")).string();
    const std::string labels = (dir / (std::string(prefix) + "-labels-idx1-ubyte.gz")).string();
    for (const std::string& p : {images, labels}) {
      std::error_code ec;
      if (!std::filesystem::exists(p, ec))
        throw IoError("Fashion-MNIST: " + p + " is missing (Debian's dataset-fashion-mnist package installs it under " +
                      kFashionMnistDirectory + ": apt-get install dataset-fashion-mnist)");
    }
    ImageDataset part = read_idx_images(images, labels);
    if (part.rows != 28 || part.cols != 28)
      throw IoError("Fashion-MNIST: " + images + " holds " + std::to_string(part.rows) + "x" +
                    std::to_string(part.cols) + " images, expected 28x28");
    for (std::size_t i = 0; i < part.labels.size(); ++i)
      if (part.labels[i] > 9)
        throw IoError("Fashion-MNIST: " + labels + ": label " + std::to_string(part.labels[i]) + " at index " +
                      std::to_string(i) + ", expected 0..9");
    if (data->count == 0)
      *data = std::move(part);  // no copy of the larger file
    else
      data->append(part);
  }
  return data;
}

RotatedImageTasks fashion_mnist_tasks(std::shared_ptr<const ImageDataset> data, const FashionMnistOptions& options) {
  const bool train = options.split == FewShotSplit::train;
  return RotatedImageTasks(std::move(data), {.ways = options.ways,
                                             .base_classes = fashion_mnist_base_classes(options.split),
                                             .name = train ? "fashion-mnist train" : "fashion-mnist test"});
}

RotatedImageTasks fashion_mnist_tasks(const FashionMnistOptions& options) {
  return fashion_mnist_tasks(load_fashion_mnist(options.directory), options);
}

}  // namespace metatape::meta
