#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>

#include "metatape/error.hpp"
#include "metatape/meta/checkpoint.hpp"

namespace metatape::tools {
namespace {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Tick labels: plain integers up to ten million, otherwise 4 significant digits.
std::string number(double v) {
  std::ostringstream out;
  if (std::abs(v) < 1e7 && std::abs(v - std::round(v)) < 1e-9 * std::max(1.0, std::abs(v))) {
    out << static_cast<long long>(std::llround(v));
  } else {
    out.precision(4);
    out << v;
  }
  return out.str();
}

// Decade ticks 1, 2, 5 × 10^k inside [low, high] (log10 units), for a log axis.
std::vector<double> log_ticks(double low, double high) {
  std::vector<double> ticks;
  for (int k = static_cast<int>(std::floor(low)); k <= static_cast<int>(std::ceil(high)); ++k)
    for (double m : {1.0, 2.0, 5.0}) {
      const double t = std::log10(m) + k;
      if (t >= low && t <= high) ticks.push_back(t);
    }
  return ticks;
}

// About `count` round tick values covering [low, high] (a finite range,
// widened by `widen`). Each tick is an integer times the step, not a running
// sum: adding a step below the rounding unit of the values would not advance.
std::vector<double> linear_ticks(double low, double high, int count) {
  const double span = high - low, raw = span / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  std::vector<double> ticks;
  const double last = std::floor(high / step + 1e-9);
  for (double k = std::ceil(low / step); k <= last && ticks.size() <= static_cast<std::size_t>(4 * count); ++k) {
    const double t = k * step;
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

// A range too narrow to divide into ticks (one value, or values equal up to
// rounding) widened about its middle.
void widen(double& low, double& high) {
  const double scale = std::max(std::abs(low), std::abs(high));
  if (high - low > 1e-9 * scale && high > low) return;
  const double middle = 0.5 * (low + high), half = scale > 0 ? 0.5 * scale : 0.5;
  low = middle - half;
  high = middle + half;
}

// Whether point i of a series is drawn: finite, and positive on a log axis.
bool drawn(const Series& s, std::size_t i, bool log_y) {
  return i < s.y.size() && std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && !(log_y && s.y[i] <= 0);
}

// Diverging blue-white-red: v in [-1, 1] to a colour, white at 0.
std::string diverging(double v) {
  v = std::clamp(v, -1.0, 1.0);
  const auto mix = [](double from, double to, double t) {
    return static_cast<int>(std::lround(from + (to - from) * t));
  };
  int r, g, b;
  if (v >= 0) {  // white to #b2182b
    r = mix(255, 178, v), g = mix(255, 24, v), b = mix(255, 43, v);
  } else {  // white to #2166ac
    r = mix(255, 33, -v), g = mix(255, 102, -v), b = mix(255, 172, -v);
  }
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", r, g, b);
  return text;
}

// The matrix averaged over blocks so that neither side exceeds `limit`
// cells: the shown grid is [shown_rows, shown_cols], row-major.
std::vector<double> pooled(std::int64_t rows, std::int64_t cols, const std::vector<double>& values, std::int64_t limit,
                           std::int64_t& shown_rows, std::int64_t& shown_cols) {
  const std::int64_t br = (rows + limit - 1) / limit, bc = (cols + limit - 1) / limit;
  shown_rows = (rows + br - 1) / br;
  shown_cols = (cols + bc - 1) / bc;
  std::vector<double> sum(static_cast<std::size_t>(shown_rows * shown_cols), 0.0), count(sum.size(), 0.0);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const auto k = static_cast<std::size_t>((i / br) * shown_cols + j / bc);
      sum[k] += values[static_cast<std::size_t>(i * cols + j)];
      count[k] += 1;
    }
  for (std::size_t k = 0; k < sum.size(); ++k) sum[k] /= count[k];
  return sum;
}

}  // namespace

const char* palette(std::size_t i) {
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colors[i % 10];
}

std::string render_svg(const Chart& chart, int width, int height) {
  const double left = 70, right = 190, top = 40, bottom = 55;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  const auto transform_y = [&](double v) { return chart.log_y ? std::log10(v) : v; };

  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min, y_min = x_min, y_max = -x_min;
  for (const Series& s : chart.series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!drawn(s, i, chart.log_y)) continue;
      const double e = i < s.error.size() && std::isfinite(s.error[i]) ? s.error[i] : 0;
      const double lo = s.y[i] - e, hi = s.y[i] + e;
      x_min = std::min(x_min, s.x[i]);
      x_max = std::max(x_max, s.x[i]);
      y_min = std::min(y_min, transform_y(chart.log_y && lo <= 0 ? s.y[i] : lo));
      y_max = std::max(y_max, transform_y(hi));
    }
  if (!std::isfinite(x_min)) x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  widen(x_min, x_max);
  widen(y_min, y_max);
  const double pad = 0.05 * (y_max - y_min);
  y_min -= pad;
  y_max += pad;
  const auto px = [&](double x) { return left + (x - x_min) / (x_max - x_min) * plot_w; };
  const auto py = [&](double y) { return top + (1 - (transform_y(y) - y_min) / (y_max - y_min)) * plot_h; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left + plot_w / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(chart.title) << "</text>\n";
  // Grid and ticks.
  for (double t : linear_ticks(x_min, x_max, 8)) {
    svg << "<line x1=\"" << px(t) << "\" y1=\"" << top << "\" x2=\"" << px(t) << "\" y2=\"" << top + plot_h
        << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << px(t) << "\" y=\"" << top + plot_h + 16
        << "\" text-anchor=\"middle\">" << number(t) << "</text>\n";
  }
  for (double t : chart.log_y ? log_ticks(y_min, y_max) : linear_ticks(y_min, y_max, 6)) {
    const double value = chart.log_y ? std::pow(10.0, t) : t;
    const double y = top + (1 - (t - y_min) / (y_max - y_min)) * plot_h;
    svg << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_w << "\" y2=\"" << y
        << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
        << number(value) << "</text>\n";
  }
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"#333\"/>\n"
      << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 14 << "\" text-anchor=\"middle\">"
      << escape(chart.x_label) << "</text>\n"
      << "<text transform=\"translate(18," << top + plot_h / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
      << escape(chart.y_label) << (chart.log_y ? " (log scale)" : "") << "</text>\n";
  // Series.
  for (std::size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    if (s.line) {
      svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.8\""
          << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"";
      for (std::size_t i = 0; i < s.x.size(); ++i)
        if (drawn(s, i, chart.log_y)) svg << px(s.x[i]) << ',' << py(s.y[i]) << ' ';
      svg << "\"/>\n";
    }
    for (std::size_t i = 0; i < s.x.size() && i < s.error.size(); ++i) {
      const double lo = s.y[i] - s.error[i], hi = s.y[i] + s.error[i];
      if (!drawn(s, i, chart.log_y) || !std::isfinite(lo) || !std::isfinite(hi) || (chart.log_y && lo <= 0)) continue;
      svg << "<line x1=\"" << px(s.x[i]) << "\" y1=\"" << py(lo) << "\" x2=\"" << px(s.x[i]) << "\" y2=\"" << py(hi)
          << "\" stroke=\"" << s.color << "\"/>\n";
    }
    if (s.markers || !s.line)
      for (std::size_t i = 0; i < s.x.size(); ++i)
        if (drawn(s, i, chart.log_y))
          svg << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i]) << "\" r=\"2.5\" fill=\"" << s.color
              << "\"/>\n";
    // Legend entry.
    const double ly = top + 12 + 20.0 * static_cast<double>(k), lx = left + plot_w + 14;
    if (s.line)
      svg << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 26 << "\" y2=\"" << ly << "\" stroke=\""
          << s.color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
    else
      svg << "<circle cx=\"" << lx + 13 << "\" cy=\"" << ly << "\" r=\"3\" fill=\"" << s.color << "\"/>\n";
    svg << "<text x=\"" << lx + 32 << "\" y=\"" << ly + 4 << "\">" << escape(s.label) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string render_heatmap_svg(std::int64_t rows, std::int64_t cols, const std::vector<double>& values,
                               const std::string& title) {
  if (rows < 1 || cols < 1 || values.size() != static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols))
    throw ValueError("heat map '" + title + "': " + std::to_string(values.size()) + " values for a " +
                     std::to_string(rows) + " x " + std::to_string(cols) + " matrix");
  std::int64_t shown_rows = rows, shown_cols = cols;
  const std::vector<double> shown = pooled(rows, cols, values, 200, shown_rows, shown_cols);
  double scale = 0;
  for (double v : shown)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  if (scale == 0) scale = 1;

  const double left = 60, top = 40, side = 520, bar = 24;
  const double cell_w = side / static_cast<double>(shown_cols), cell_h = side / static_cast<double>(shown_rows);
  const double width = left + side + 40 + bar + 90, height = top + side + 50;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left + side / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << escape(title)
      << "</text>\n";
  for (std::int64_t i = 0; i < shown_rows; ++i)
    for (std::int64_t j = 0; j < shown_cols; ++j) {
      const double v = shown[static_cast<std::size_t>(i * shown_cols + j)];
      // The cells overlap by a hair so no white seams show between them.
      svg << "<rect x=\"" << left + static_cast<double>(j) * cell_w << "\" y=\""
          << top + static_cast<double>(i) * cell_h << "\" width=\"" << cell_w + 0.3 << "\" height=\"" << cell_h + 0.3
          << "\" fill=\"" << (std::isfinite(v) ? diverging(v / scale) : std::string("#999999")) << "\"/>\n";
    }
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << side << "\" height=\"" << side
      << "\" fill=\"none\" stroke=\"#333\"/>\n"
      << "<text x=\"" << left + side / 2 << "\" y=\"" << top + side + 20 << "\" text-anchor=\"middle\">" << cols
      << " columns" << (shown_cols < cols ? " (block means)" : "") << "</text>\n"
      << "<text transform=\"translate(" << left - 12 << "," << top + side / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << rows << " rows</text>\n";
  // The colour bar: +scale at the top, -scale at the bottom.
  const double bx = left + side + 40;
  for (int k = 0; k < 100; ++k)
    svg << "<rect x=\"" << bx << "\" y=\"" << top + side * k / 100.0 << "\" width=\"" << bar << "\" height=\""
        << side / 100.0 + 0.3 << "\" fill=\"" << diverging(1 - 2 * (k + 0.5) / 100.0) << "\"/>\n";
  svg << "<rect x=\"" << bx << "\" y=\"" << top << "\" width=\"" << bar << "\" height=\"" << side
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (double t : {1.0, 0.5, 0.0, -0.5, -1.0})
    svg << "<text x=\"" << bx + bar + 6 << "\" y=\"" << top + side * (1 - t) / 2 + 4 << "\">" << number(t * scale)
        << "</text>\n";
  svg << "</svg>\n";
  return svg.str();
}

void write_heatmap_svg(const std::string& path, std::int64_t rows, std::int64_t cols, const std::vector<double>& values,
                       const std::string& title) {
  meta::write_file_atomically(path, render_heatmap_svg(rows, cols, values, title));
}

std::string render_spectrum_svg(const std::vector<double>& eigenvalues, const std::string& title) {
  std::vector<double> sorted = eigenvalues;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  Series s;
  s.label = "eigenvalue";
  s.markers = true;
  std::size_t left_out = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (!(sorted[i] > 0)) ++left_out;
    s.x.push_back(static_cast<double>(i + 1));
    s.y.push_back(sorted[i]);
  }
  Chart chart{.title = title + (left_out ? " (" + std::to_string(left_out) + " non-positive not shown)" : ""),
              .x_label = "index (decreasing)",
              .y_label = "eigenvalue",
              .log_y = true,
              .series = {s}};
  return render_svg(chart);
}

void write_spectrum_svg(const std::string& path, const std::vector<double>& eigenvalues, const std::string& title) {
  meta::write_file_atomically(path, render_spectrum_svg(eigenvalues, title));
}

}  // namespace metatape::tools
