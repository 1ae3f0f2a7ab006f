#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

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

// About `count` round tick values covering [low, high].
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
  for (double t = std::ceil(low / step) * step; t <= high + step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return ticks;
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
      const double e = i < s.error.size() ? s.error[i] : 0;
      const double lo = s.y[i] - e, hi = s.y[i] + e;
      if (!std::isfinite(s.y[i]) || (chart.log_y && s.y[i] <= 0)) continue;
      x_min = std::min(x_min, s.x[i]);
      x_max = std::max(x_max, s.x[i]);
      y_min = std::min(y_min, transform_y(chart.log_y && lo <= 0 ? s.y[i] : lo));
      y_max = std::max(y_max, transform_y(hi));
    }
  if (!std::isfinite(x_min)) x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  if (x_max == x_min) x_max = x_min + 1;
  if (y_max == y_min) y_max = y_min + 1;
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
    svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.8\""
        << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"";
    for (std::size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i]) && !(chart.log_y && s.y[i] <= 0)) svg << px(s.x[i]) << ',' << py(s.y[i]) << ' ';
    svg << "\"/>\n";
    for (std::size_t i = 0; i < s.x.size() && i < s.error.size(); ++i) {
      const double lo = s.y[i] - s.error[i], hi = s.y[i] + s.error[i];
      if (!std::isfinite(lo) || !std::isfinite(hi) || (chart.log_y && lo <= 0)) continue;
      svg << "<line x1=\"" << px(s.x[i]) << "\" y1=\"" << py(lo) << "\" x2=\"" << px(s.x[i]) << "\" y2=\"" << py(hi)
          << "\" stroke=\"" << s.color << "\"/>\n";
    }
    if (s.markers)
      for (std::size_t i = 0; i < s.x.size(); ++i)
        if (std::isfinite(s.y[i]) && !(chart.log_y && s.y[i] <= 0))
          svg << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i]) << "\" r=\"2.5\" fill=\"" << s.color
              << "\"/>\n";
    // Legend entry.
    const double ly = top + 12 + 20.0 * static_cast<double>(k), lx = left + plot_w + 14;
    svg << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 26 << "\" y2=\"" << ly << "\" stroke=\""
        << s.color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n"
        << "<text x=\"" << lx + 32 << "\" y=\"" << ly + 4 << "\">" << escape(s.label) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace metatape::tools
