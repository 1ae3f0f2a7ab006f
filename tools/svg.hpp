// Line charts and heat maps as standalone SVG: enough to look at a learning
// curve, an MSE-versus-steps curve or a kernel matrix in a browser without
// any plotting stack.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metatape::tools {

struct Series {
  std::string label;
  std::vector<double> x, y;
  std::vector<double> error;  // optional: ± bars at each point
  std::string color = "#1f77b4";
  bool dashed = false;
  bool markers = false;
  bool line = true;  // false: markers only (a scatter plot)
};

struct Chart {
  std::string title, x_label, y_label;
  bool log_y = false;  // non-positive values are left out on a log axis
  std::vector<Series> series;
};

std::string render_svg(const Chart& chart, int width = 760, int height = 460);

// A heat map of a rows x cols matrix given row-major in `values` (size
// rows * cols): one cell per entry on a diverging blue-white-red scale
// symmetric about 0 (a kernel is usually positive; a negative entry shows as
// blue), with a colour bar. Non-finite entries are drawn grey. Matrices
// larger than 200 x 200 are shown in blocks (each cell the mean of its
// block) so the file stays small. Throws ValueError when values.size() !=
// rows * cols or either size is 0.
std::string render_heatmap_svg(std::int64_t rows, std::int64_t cols, const std::vector<double>& values,
                               const std::string& title);
// Writes render_heatmap_svg to `path` (atomically); IoError naming the path if it cannot.
void write_heatmap_svg(const std::string& path, std::int64_t rows, std::int64_t cols, const std::vector<double>& values,
                       const std::string& title);

// The eigenvalue spectrum: eigenvalues sorted in decreasing order against
// their index, on a log axis (|λ| of a positive semi-definite matrix's
// rounding-level negative eigenvalues is not shown: non-positive values are
// left out and counted in the title).
std::string render_spectrum_svg(const std::vector<double>& eigenvalues, const std::string& title);
// Writes render_spectrum_svg to `path` (atomically); IoError naming the path if it cannot.
void write_spectrum_svg(const std::string& path, const std::vector<double>& eigenvalues, const std::string& title);

// A qualitative palette (Tableau 10): colour i, cycling.
const char* palette(std::size_t i);

}  // namespace metatape::tools
