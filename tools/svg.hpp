// Line charts as standalone SVG: enough to look at a learning curve or an
// MSE-versus-steps curve in a browser without any plotting stack.
#pragma once

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
};

struct Chart {
  std::string title, x_label, y_label;
  bool log_y = false;  // non-positive values are left out on a log axis
  std::vector<Series> series;
};

std::string render_svg(const Chart& chart, int width = 760, int height = 460);

// A qualitative palette (Tableau 10): colour i, cycling.
const char* palette(std::size_t i);

}  // namespace metatape::tools
