// Image data sets for few-shot classification: the IDX reader (the format of
// MNIST and Fashion-MNIST), the Omniglot PNG tree, and episodes whose classes
// are base classes at four rotations, as in the rotated-Omniglot protocol
// (docs/methods.md §1).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "metatape/meta/tasks.hpp"

namespace metatape::meta {

// --- IDX files ---
// Layout (big-endian): u16 0, u8 type (0x08 = unsigned bytes, the only one
// read here), u8 rank, rank × u32 dims, then the product of the dims in bytes,
// row-major, and nothing after. Labels are 0x00000801 (rank 1), images
// 0x00000803 (rank 3).

// The most data bytes an IDX file may declare: every count is bounded before
// anything is allocated, so a corrupt header cannot ask for unbounded memory.
inline constexpr std::uint64_t kIdxMaxBytes = std::uint64_t{1} << 31;

struct IdxArray {
  std::vector<std::int64_t> dims;  // rank 1..4, each >= 1
  std::vector<std::uint8_t> data;  // row-major, product(dims) bytes
};

// Reads an IDX file of unsigned bytes, gzip'd (read through zlib) or plain.
// Throws IoError naming the path and what is wrong: a missing or unreadable
// file, a bad magic, a header cut short, dims whose bytes exceed max_bytes or
// what the file can hold (a plain file must hold exactly header + data; a
// gzip file cannot decompress to more than 1032× its size, deflate's
// limit), data truncated at byte N (of the decompressed stream), trailing
// bytes, or gzip data that is corrupt (checksum included).
IdxArray read_idx(const std::string& path, std::uint64_t max_bytes = kIdxMaxBytes);

// Labelled greyscale images, all pixels in one contiguous buffer. Labels are
// 32-bit: Omniglot has 1,623 base classes, more than a byte holds.
struct ImageDataset {
  std::int64_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // [count, rows, cols]
  std::vector<std::int32_t> labels;  // [count]
  const std::uint8_t* image(std::int64_t i) const { return pixels.data() + i * rows * cols; }
  // Appends other's images (same rows and cols, else ShapeError).
  void append(const ImageDataset& other);
};

// Images from an IDX file of rank 3 and labels from one of rank 1 with the
// same count. IoError (naming the path) for anything read_idx refuses, a
// wrong rank, or counts that differ between the files.
ImageDataset read_idx_images(const std::string& images_path, const std::string& labels_path);

// --- few-shot episodes over rotated classes ---

// Few-shot class c of a RotatedImageTasks is base class base_classes[c / 4]
// turned counterclockwise by (c % 4) · 90°.
struct RotatedClass {
  std::int64_t base = 0;
  int quarter_turns = 0;  // 0..3
};

// Copies a square image of side s turned counterclockwise by
// quarter_turns · 90° (np.rot90's convention: out[i][j] = in[j][s−1−i] for
// one turn), scaling pixels by 1/255. `out` holds s·s values.
template <class T>
void rotate_image(const std::uint8_t* in, std::int64_t s, int quarter_turns, T* out);

struct RotatedImageTaskOptions {
  std::int64_t ways = 5;
  std::vector<std::int64_t> base_classes;  // labels of the data set used, distinct
  std::string name = "rotated images";     // for describe()
};

// N-way episodes: per task, `ways` classes drawn without replacement from
// the 4 · |base_classes| rotated classes, and per class `support` + `query`
// distinct images drawn without replacement, the first `support` for the
// support set and the rest for the query set (so the two are disjoint).
// support_x is [T, N·K, 1, s, s] with pixels/255, support_y i64 [T, N·K]:
// example i has label i mod N (episode label j is the j-th drawn class);
// likewise query with Q. Images are rotated while they are copied into the
// batch; the per-class index is built once, in the constructor, so an episode
// copies only its own images. Draws from `gen`: per task, the classes, then
// per class its images, so a seed fixes the episodes.
class RotatedImageTasks final : public TaskSampler {
 public:
  // ValueError: ways < 1 or above the number of classes, a base class listed
  // twice or with no image, non-square images, buffers whose sizes do not
  // match count, rows and cols.
  RotatedImageTasks(std::shared_ptr<const ImageDataset> data, const RotatedImageTaskOptions& options);
  // ValueError: tasks, support or query < 1, or support + query above the
  // images of the smallest class; DTypeError unless dtype is f32 or f64.
  TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                   DType dtype = DType::f32) const override;
  std::string describe() const override;

  std::int64_t classes() const { return static_cast<std::int64_t>(classes_.size()); }
  const RotatedClass& class_at(std::int64_t c) const { return classes_.at(static_cast<std::size_t>(c)); }

 private:
  std::shared_ptr<const ImageDataset> data_;
  RotatedImageTaskOptions options_;
  std::vector<RotatedClass> classes_;
  std::vector<std::vector<std::int64_t>> members_;  // per base class (in base_classes order): image indices
  std::int64_t smallest_class_ = 0;
};

// --- Fashion-MNIST ---

inline constexpr const char* kFashionMnistDirectory = "/usr/share/datasets/fashion-mnist";
enum class FewShotSplit { train, test };

struct FashionMnistOptions {
  std::int64_t ways = 5;
  FewShotSplit split = FewShotSplit::train;
  std::string directory = kFashionMnistDirectory;
};

// The base classes of a split: 0–5 for meta-training, 6–9 for meta-testing,
// so the 24 training and 16 test classes share no image.
std::vector<std::int64_t> fashion_mnist_base_classes(FewShotSplit split);

// All 70,000 images: train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz
// with their labels, pooled (the class split, not the files' split, keeps
// meta-training and meta-testing apart), 7,000 per class. IoError naming the
// missing path and the Debian package dataset-fashion-mnist that installs
// it; IoError for a label outside 0..9 or images that are not 28×28.
std::shared_ptr<const ImageDataset> load_fashion_mnist(const std::string& directory = kFashionMnistDirectory);

// The Fashion-MNIST few-shot split (load_fashion_mnist, then the split's
// classes); the second form shares data already loaded.
RotatedImageTasks fashion_mnist_tasks(const FashionMnistOptions& options = {});
RotatedImageTasks fashion_mnist_tasks(std::shared_ptr<const ImageDataset> data, const FashionMnistOptions& options);

// --- Omniglot (Lake et al. 2015) ---
// The standard release: DIR/images_background/<alphabet>/<character>/*.png
// (30 alphabets, 964 characters) and DIR/images_evaluation/... (20 alphabets,
// 659 characters), 20 drawings of 105×105 greyscale per character, black ink
// on white.
//
// Loading (docs/methods.md §1): the characters are pooled in a fixed order,
// images_background before images_evaluation, alphabets, characters and
// drawings each sorted by file name (byte order), so the order, and with it
// the split, does not depend on the file system. Base class c is the c-th
// character; the first train_characters (1,200, the standard split of
// Vinyals et al. and Finn et al.) meta-train and the remaining 423
// meta-test, each at 4 rotations (4,800 and 1,692 classes). Finn et al.'s
// code shuffles the list with Python's random.seed(1) before cutting it;
// that permutation is not reproduced here, so the 1,200 are not the same
// characters as theirs (the sizes and the protocol are).
// Each drawing is decoded to 8-bit grey by libpng (1-bit images give 0/255),
// resized to image_size² by area averaging (resize_area), and inverted
// (stored as 255 − grey) so that ink is 1 and paper 0 after the 1/255
// scaling of the episodes, as MAML's code does (1 − x/255). The reference
// resizes with PIL instead: its LANCZOS request falls back to nearest
// neighbour for 1-bit images, so its pixels are 0 or 1 where ours are grey
// along the strokes' edges.

inline constexpr std::int64_t kOmniglotTrainCharacters = 1200;
// The largest width or height a PNG may declare (Omniglot's are 105): checked
// in the header, before anything is allocated for the pixels.
inline constexpr std::int64_t kPngMaxSide = 4096;
// The largest max_side a caller may ask for: a 16384² grey image is 256 MiB.
inline constexpr std::int64_t kPngLargestSide = 16384;
// The largest PNG file read (Omniglot's are a few hundred bytes each).
inline constexpr std::uint64_t kPngMaxFileBytes = std::uint64_t{1} << 26;

struct GreyImage {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // [rows, cols]
};

// Decodes a PNG file of any colour type and bit depth to 8-bit grey (libpng's
// simplified API: colour is converted to grey, 16-bit to 8, transparency is
// composited onto white). IoError naming the path: a missing or unreadable
// file, one larger than kPngMaxFileBytes, a width or height above max_side,
// whatever libpng refuses (bad signature, CRC error in a critical chunk,
// truncated or corrupt image data), with libpng's message, and a file that
// does not end with the IEND chunk (cut short after the image data, or
// followed by other bytes). ValueError for max_side outside 1..kPngLargestSide.
GreyImage read_png_grey(const std::string& path, std::int64_t max_side = kPngMaxSide);

// Area-average resize of a rows×cols image to size×size: output pixel (o, p)
// is the mean of the source over the rectangle it covers, each source pixel
// weighted by the area of its overlap (the box filter; for 105 → 28 each
// output pixel covers 3.75×3.75 source pixels). Computed in integers and
// rounded to nearest (halves up), so a constant image stays constant and
// equal sizes copy exactly. `out` holds size² values; ValueError unless
// rows, cols and size are in 1..kPngMaxSide.
void resize_area(const std::uint8_t* in, std::int64_t rows, std::int64_t cols, std::int64_t size, std::uint8_t* out);

struct OmniglotOptions {
  std::int64_t ways = 5;
  FewShotSplit split = FewShotSplit::train;
  std::string directory{};       // holds images_background and images_evaluation
  std::int64_t image_size = 28;  // side of the stored images
  // Characters (in the order above) that meta-train; the rest meta-test.
  // Only tests on a small generated tree set another value.
  std::int64_t train_characters = kOmniglotTrainCharacters;
};

// The character folders of DIR in the order above (their index is the base
// class). IoError naming the path: DIR, images_background or
// images_evaluation missing or not a directory, an alphabet without a
// character folder.
std::vector<std::string> omniglot_characters(const std::string& directory);

// All drawings of every character, image_size² pixels each (inverted, see
// above), label = character index. IoError naming the path: anything
// omniglot_characters or read_png_grey refuses, a character folder with no
// .png file, a drawing that is not square. Other files are ignored.
// ValueError unless image_size is in 1..kPngMaxSide.
std::shared_ptr<const ImageDataset> load_omniglot(const std::string& directory, std::int64_t image_size = 28);

// The base classes of a split for a data set of `characters` characters:
// 0..train_characters−1 for meta-training, the rest for meta-testing.
// ValueError unless 1 <= train_characters < characters (a partial tree:
// the standard split needs more than 1,200 characters).
std::vector<std::int64_t> omniglot_base_classes(FewShotSplit split, std::int64_t characters,
                                                std::int64_t train_characters = kOmniglotTrainCharacters);

// The Omniglot few-shot split (load_omniglot, then the split's classes); the
// second form shares data already loaded (its characters = 1 + the largest
// label). ValueError as omniglot_base_classes and RotatedImageTasks.
RotatedImageTasks omniglot_tasks(const OmniglotOptions& options);
RotatedImageTasks omniglot_tasks(std::shared_ptr<const ImageDataset> data, const OmniglotOptions& options);

}  // namespace metatape::meta
