// json_compare ACTUAL.json EXPECTED.json TOL
//
// Compares the output of `nabla eval --json` with an expected result of the same form,
// {"loss": X, "grads": {"NAME": nested arrays}}: the loss must agree to TOL relative to |loss|,
// and every param's gradient to TOL relative to the largest magnitude in the expected array
// (max |a - b| <= TOL * max |b|). The params must be the same set with the same shapes, and every
// number must be finite (nabla writes a non-finite number as null). Prints one line per failure
// (and the worst error per array with -v); exits 0 when everything agrees, 1 when not, 2 on
// unreadable input. Written in C++ so the conformance test needs no python.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

bool load(const char *path, json &out) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << path << ": error: cannot open\n";
    return false;
  }
  try {
    out = json::parse(in);
  } catch (const std::exception &e) {
    std::cerr << path << ": error: " << e.what() << "\n";
    return false;
  }
  return true;
}

// Flattens nested arrays into `flat` and records the shape; false on a non-number leaf or ragged
// arrays. A null (a non-finite number) is recorded as NaN so that the comparison fails.
bool flatten(const json &j, std::vector<double> &flat, std::vector<size_t> &shape, size_t depth = 0) {
  if (j.is_number()) {
    if (depth != shape.size()) return false;
    flat.push_back(j.get<double>());
    return true;
  }
  if (j.is_null()) {
    if (depth != shape.size()) return false;
    flat.push_back(std::nan(""));
    return true;
  }
  if (!j.is_array()) return false;
  if (depth == shape.size()) {
    if (!flat.empty() && depth > 0) return false; // a number seen at a shallower depth before
    shape.push_back(j.size());
  } else if (depth > shape.size() || shape[depth] != j.size()) {
    return false;
  }
  for (const json &e : j)
    if (!flatten(e, flat, shape, depth + 1)) return false;
  return true;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
std::string sci(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string shapeStr(const std::vector<size_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

} // namespace

int main(int argc, char **argv) {
  bool verbose = false;
  std::vector<const char *> args;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "-v") verbose = true;
    else args.push_back(argv[i]);
  }
  if (args.size() != 3) {
    std::cerr << "usage: json_compare [-v] ACTUAL.json EXPECTED.json TOL\n";
    return 2;
  }
  char *end = nullptr;
  const double tol = std::strtod(args[2], &end);
  if (!end || *end || !(tol >= 0)) {
    std::cerr << "json_compare: bad tolerance '" << args[2] << "'\n";
    return 2;
  }
  json actual, expected;
  if (!load(args[0], actual) || !load(args[1], expected)) return 2;
  int failures = 0;
  auto fail = [&](const std::string &msg) {
    std::cout << "  " << msg << "\n";
    ++failures;
  };

  // The loss.
  if (!expected.contains("loss") || !expected["loss"].is_number()) {
    std::cerr << args[1] << ": error: no numeric \"loss\"\n";
    return 2;
  }
  const double el = expected["loss"].get<double>();
  if (!actual.contains("loss") || !actual["loss"].is_number()) {
    fail("loss: missing or not a finite number");
  } else {
    const double al = actual["loss"].get<double>();
    const double err = std::abs(al - el);
    if (!std::isfinite(al) || !(err <= tol * std::abs(el)))
      fail("loss: got " + num(al) + ", expected " + num(el) + " (relative error " +
           sci(err / std::abs(el)) + ")");
    else if (verbose)
      std::cout << "  loss: relative error " << err / std::abs(el) << "\n";
  }

  // The gradients: same names, same shapes, close values.
  const json &eg = expected.value("grads", json::object());
  const json ag = actual.contains("grads") && actual["grads"].is_object() ? actual["grads"] : json::object();
  if (!actual.contains("grads") || !actual["grads"].is_object()) fail("grads: missing");
  for (auto it = ag.begin(); it != ag.end(); ++it)
    if (!eg.contains(it.key())) fail("grads: unexpected param \"" + it.key() + "\"");
  for (auto it = eg.begin(); it != eg.end(); ++it) {
    const std::string &name = it.key();
    if (!ag.contains(name)) {
      fail("grads: missing param \"" + name + "\"");
      continue;
    }
    std::vector<double> a, b;
    std::vector<size_t> sa, sb;
    if (!flatten(it.value(), b, sb)) {
      std::cerr << args[1] << ": error: grads \"" << name << "\" is not a nested numeric array\n";
      return 2;
    }
    if (!flatten(ag[name], a, sa) || sa != sb || a.size() != b.size()) {
      fail("\"" + name + "\": shape " + shapeStr(sa) + ", expected " + shapeStr(sb));
      continue;
    }
    double maxB = 0, maxErr = 0;
    bool finite = true;
    for (size_t i = 0; i < a.size(); ++i) {
      maxB = std::max(maxB, std::abs(b[i]));
      if (!std::isfinite(a[i])) finite = false;
      else maxErr = std::max(maxErr, std::abs(a[i] - b[i]));
    }
    if (!finite) fail("\"" + name + "\": a non-finite element (null)");
    else if (!(maxErr <= tol * maxB))
      fail("\"" + name + "\": max |a - b| = " + sci(maxErr) + " > " + sci(tol) + " * max |b| = " +
           sci(tol * maxB) + " (relative error " + sci(maxB > 0 ? maxErr / maxB : INFINITY) + ")");
    else if (verbose)
      std::cout << "  \"" << name << "\": relative error " << (maxB > 0 ? maxErr / maxB : 0.0) << "\n";
  }
  return failures ? 1 : 0;
}
