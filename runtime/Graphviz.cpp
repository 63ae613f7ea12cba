// Running `dot`: posix_spawn with three pipes, fed and drained together through poll() (a graph
// of a few hundred kilobytes fills a pipe both ways, so writing it all before reading would
// deadlock).
#include "Graphviz.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <string_view>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace nabla {

std::string findDot() {
  const char *path = std::getenv("PATH");
  std::string_view rest = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const size_t colon = rest.find(':');
    // (an empty entry is the current directory, as for execvp)
    const std::string_view dir = rest.substr(0, colon);
    std::string candidate(dir.empty() ? std::string_view(".") : dir);
    candidate.append("/dot");
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (colon == std::string_view::npos) return "";
    rest.remove_prefix(colon + 1);
  }
}

namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() { closeBoth(); }
  void close(int k) {
    if (fd[k] >= 0) ::close(fd[k]);
    fd[k] = -1;
  }
  void closeBoth() { close(0), close(1); }
};

} // namespace

Expected<std::string> runDot(const std::string &dotText, const std::string &format, int timeoutSeconds) {
  const std::string dot = findDot();
  if (dot.empty())
    return Error{"nabla: error: Graphviz's 'dot' was not found on PATH; it lays out the picture "
                 "(install the Debian package graphviz), or write the graph as dot text with "
                 "'-o FILE.dot', which needs nothing"};
  Pipe in, out, err;
  if (::pipe2(in.fd, O_CLOEXEC) != 0 || ::pipe2(out.fd, O_CLOEXEC) != 0 || ::pipe2(err.fd, O_CLOEXEC) != 0)
    return Error{fmt::format("nabla: error: cannot run dot: {}", std::strerror(errno))};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fd[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out.fd[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err.fd[1], 2);
  const std::string formatArg = "-T" + format;
  std::vector<char *> argv = {const_cast<char *>(dot.c_str()), const_cast<char *>(formatArg.c_str()), nullptr};
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, dot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return Error{fmt::format("nabla: error: cannot run {}: {}", dot, std::strerror(spawned))};
  in.close(0), out.close(1), err.close(1);
  // Non-blocking writes, so that a full pipe returns to poll() rather than waiting.
  ::fcntl(in.fd[1], F_SETFL, ::fcntl(in.fd[1], F_GETFL) | O_NONBLOCK);
  // (NABLA_DOT_TIMEOUT, seconds, for tests of this path)
  if (const char *t = std::getenv("NABLA_DOT_TIMEOUT"); t && std::atoi(t) > 0) timeoutSeconds = std::atoi(t);
  std::string result, errors;
  size_t written = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeoutSeconds);
  bool timedOut = false;
  if (dotText.empty()) in.close(1);
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    pollfd fds[3];
    nfds_t n = 0;
    auto watch = [&](int fd, short events) {
      if (fd >= 0) fds[n++] = pollfd{fd, events, 0};
    };
    watch(in.fd[1], POLLOUT);
    watch(out.fd[0], POLLIN);
    watch(err.fd[0], POLLIN);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      ::kill(pid, SIGKILL);
      break;
    }
    const int ready = ::poll(fds, n, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (nfds_t k = 0; k < n; ++k) {
      if (!fds[k].revents) continue;
      const int fd = fds[k].fd;
      if (fd == in.fd[1]) {
        const ssize_t w = ::write(fd, dotText.data() + written, dotText.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        // (dot that stopped reading, EPIPE: its status and message tell why)
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == dotText.size()) in.close(1);
        continue;
      }
      char buf[65536];
      const ssize_t r = ::read(fd, buf, sizeof buf);
      if (r > 0) (fd == out.fd[0] ? result : errors).append(buf, static_cast<size_t>(r));
      else if (r == 0 || (errno != EAGAIN && errno != EINTR)) (fd == out.fd[0] ? out : err).close(0);
    }
  }
  in.close(1);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (timedOut)
    return Error{fmt::format("nabla: error: {} did not finish laying out the graph in {} s; write the dot "
                             "text instead ('-o FILE.dot'), or draw fewer nodes ('--detail values')",
                             dot, timeoutSeconds)};
  while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Error{fmt::format("nabla: error: {} -T{} failed ({}){}", dot, format,
                             WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                               : fmt::format("signal {}", WTERMSIG(status)),
                             errors.empty() ? "" : ": " + errors)};
  return result;
}

} // namespace nabla
