#include "distributed.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#ifdef METATAPE_WITH_MPI
#include "metatape/meta/mpi_communicator.hpp"
#endif

namespace metatape::tools {
namespace {

std::shared_ptr<meta::Communicator> group;

// What the signal handler reads: plain atomics, no allocation.
const char* terminated_command = "";
std::atomic<std::int64_t> reached_iteration{-1}, checkpoint_iteration{-1};
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "the signal handler reads these");
int termination_rank = 0, termination_size = 1;

// Async-signal-safe output: a fixed buffer, write(2).
struct SignalText {
  char text[512];
  std::size_t size = 0;
  void add(const char* s) {
    for (; *s && size < sizeof text; ++s) text[size++] = *s;
  }
  void add(std::int64_t value) {
    char digits[24];
    int n = 0;
    std::uint64_t v = value < 0 ? 0 : static_cast<std::uint64_t>(value);
    do digits[n++] = static_cast<char>('0' + v % 10);
    while ((v /= 10) != 0 && n < 24);
    while (n > 0 && size < sizeof text) text[size++] = digits[--n];
  }
};

void on_termination(int signal) {
  SignalText out;
  out.add("metatape ");
  out.add(terminated_command);
  if (termination_size > 1) {
    out.add(" (rank ");
    out.add(static_cast<std::int64_t>(termination_rank));
    out.add(" of ");
    out.add(static_cast<std::int64_t>(termination_size));
    out.add(")");
  }
  out.add(signal == SIGINT ? ": interrupted" : ": terminated");
  if (const std::int64_t i = reached_iteration.load(); i >= 0) {
    out.add(" after iteration ");
    out.add(i);
  }
  if (termination_size > 1) out.add(" by the launcher (another rank may have ended first; mpirun names it)");
  if (const std::int64_t c = checkpoint_iteration.load(); c > 0) {
    // Rank 0 may have written a later one that this rank has not heard of.
    out.add("; the run's checkpoint (iteration ");
    out.add(c);
    out.add(" or later) stays valid: --resume continues from it");
  }
  out.add("\n");
  [[maybe_unused]] const ssize_t written = write(STDERR_FILENO, out.text, out.size);
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

}  // namespace

std::shared_ptr<meta::Communicator> process_group() {
  if (group) return group;
#ifdef METATAPE_WITH_MPI
  if (meta::launched_by_mpi_launcher()) group = meta::mpi_world();
#else
  if (meta::launched_by_mpi_launcher())
    throw ValueError(
        "started by an MPI launcher, but this metatape was built without MPI (install libopenmpi-dev and rebuild "
        "with -Dmpi=enabled): each process would train alone and overwrite the others' files");
#endif
  if (!group) group = std::make_shared<meta::SelfCommunicator>();
  termination_rank = group->rank();
  termination_size = group->size();
  return group;
}

int process_rank() { return group ? group->rank() : 0; }

std::string rank_label() {
  if (!group || group->size() == 1) return "";
  return " (rank " + std::to_string(group->rank()) + " of " + std::to_string(group->size()) + ")";
}

bool ends_normally_after_failure() { return !group || group->size() == 1 || meta::failure_known_to_every_rank(); }

void abort_group(const std::string& message) {
#ifdef METATAPE_WITH_MPI
  meta::mpi_abort(message);
#else
  std::fprintf(stderr, "metatape: %s\n", message.c_str());  // one process: nobody else to end
  std::_Exit(1);
#endif
}

std::int64_t group_minimum(meta::Communicator& group, std::int64_t value) {
  std::int64_t smallest = value;
  for (const std::string& v : group.all_gather_bytes(std::to_string(value)))
    smallest = std::min<std::int64_t>(smallest, std::stoll(v));
  return smallest;
}

void require_same_fields(meta::Communicator& group, const std::string& what,
                         const std::vector<std::pair<std::string, std::string>>& fields) {
  // Values joined by a byte no option holds; the names are the same on every rank.
  std::string mine;
  for (const auto& [name, value] : fields) mine += value + '\x1f';
  const std::vector<std::string> all = group.all_gather_bytes(mine);
  const auto split = [](const std::string& text) {
    std::vector<std::string> values;
    std::size_t start = 0;
    for (std::size_t end; (end = text.find('\x1f', start)) != std::string::npos; start = end + 1)
      values.push_back(text.substr(start, end - start));
    return values;
  };
  std::vector<std::vector<std::string>> values;
  for (const std::string& text : all) values.push_back(split(text));
  for (std::size_t f = 0; f < fields.size(); ++f) {
    bool same = true;
    for (const auto& rank_values : values) same = same && f < rank_values.size() && rank_values[f] == values[0][f];
    if (same) continue;
    std::string message = what + " differs between ranks: " + fields[f].first + " is ";
    for (std::size_t r = 0; r < values.size(); ++r)
      message += (r ? ", " : "") + (f < values[r].size() ? "'" + values[r][f] + "'" : "missing") + " on rank " +
                 std::to_string(r);
    meta::note_failure_known_to_every_rank();
    throw ValueError(message);
  }
}

void report_termination(const char* command) {
  terminated_command = command;
  std::signal(SIGTERM, on_termination);
  std::signal(SIGINT, on_termination);
}

void set_progress(std::int64_t iteration, std::int64_t last_checkpoint) {
  reached_iteration.store(iteration);
  checkpoint_iteration.store(last_checkpoint);
}

}  // namespace metatape::tools
