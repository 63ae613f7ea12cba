// An oracle for the fuzz targets: checks a lowered program for what would make compiled code read
// or write out of bounds, or read scratch memory that nothing wrote. For n = 1 and n = 3 examples,
// every access (loads, the kernel's output, a softmax row) stays inside its buffer and its buffer
// inside its space; in each function a workspace buffer is written before it is read, and two
// workspace buffers that share memory are never live at the same time. Returns "" or what is wrong.
#pragma once
#include "LoopIR.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>

namespace nabla::fuzz {

struct LoopSpaces { // elements in each caller-provided space, for one example or in all
  int64_t params, inputs, targets, outputs;
};

inline std::string checkLoops(const loops::Program &L, const LoopSpaces &sp) {
  using namespace loops;
  for (int64_t n : {int64_t(1), int64_t(3)}) {
    auto spaceSize = [&](Space s) -> int64_t {
      switch (s) {
      case Space::Params: case Space::Grads: return sp.params;
      case Space::Inputs: return sp.inputs * n;
      case Space::Targets: return sp.targets * n;
      case Space::Outputs: return sp.outputs * n;
      case Space::Workspace: return L.workspaceFixed + L.workspacePerExample * n;
      }
      return 0;
    };
    // [start, end) of a buffer within its space.
    auto region = [&](const Buffer &b) {
      int64_t start = b.offset + b.offsetPerN * n;
      int64_t len = b.batchStride ? b.batchStride * (n - 1) + b.size : b.size;
      return std::pair<int64_t, int64_t>{start, start + len};
    };
    for (size_t i = 0; i < L.buffers.size(); ++i) {
      const Buffer &b = L.buffers[i];
      auto [s, e] = region(b);
      if (b.size < 0 || s < 0 || e > spaceSize(b.space))
        return fmt::format("n={}: buffer {} ({}) spans [{}, {}) outside its space of {}", n, i,
                           b.name, s, e, spaceSize(b.space));
    }
    for (const Function *f : {&L.forward, &L.gradient}) {
      std::map<int, std::pair<int, int>> life; // workspace buffer -> first, last kernel touching it
      std::map<int, bool> written;
      std::string err;
      // The extent of loop variable v in kernel k at this n, or -1 when no loop defines it.
      auto extentOf = [&](const Kernel &k, int v) -> int64_t {
        auto l = std::find_if(k.loops.begin(), k.loops.end(), [&](const Loop &x) { return x.var == v; });
        return l == k.loops.end() ? -1 : l->batch ? n : l->extent;
      };
      // An access with bounds (a zero-padded load, a scatter into a padded image) happens only
      // where every bound holds: the [lo, hi] of its index over those iterations, by enumerating
      // the variables involved (false when there are too many iterations to enumerate).
      auto boundedRange = [&](const Kernel &k, const Affine &idx, const std::vector<Bound> &bounds, int64_t &lo,
                              int64_t &hi) {
        std::vector<int> vars;
        auto note = [&](const Affine &a) {
          for (auto [v, c] : a.terms)
            if (std::find(vars.begin(), vars.end(), v) == vars.end()) vars.push_back(v);
        };
        note(idx);
        for (const Bound &b : bounds) note(b.index);
        std::vector<int64_t> ext, at(vars.size(), 0);
        int64_t total = 1;
        for (int v : vars) {
          ext.push_back(extentOf(k, v));
          if (ext.back() <= 0) return false;
          total *= ext.back();
          if (total > (int64_t(1) << 22)) return false;
        }
        auto value = [&](const Affine &a) {
          int64_t x = a.constant;
          for (auto [v, c] : a.terms) x += c * at[static_cast<size_t>(std::find(vars.begin(), vars.end(), v) - vars.begin())];
          return x;
        };
        lo = INT64_MAX, hi = INT64_MIN;
        for (int64_t it = 0; it < total; ++it) {
          int64_t r = it;
          for (size_t i = 0; i < vars.size(); ++i) at[i] = r % ext[i], r /= ext[i];
          bool inside = true;
          for (const Bound &b : bounds) {
            int64_t x = value(b.index);
            inside &= x >= 0 && x < b.extent;
          }
          if (!inside) continue;
          lo = std::min(lo, value(idx));
          hi = std::max(hi, value(idx));
        }
        if (lo > hi) lo = hi = 0; // never happens: treat as element 0
        return true;
      };
      auto access = [&](const Kernel &k, int buf, const Affine &idx, int64_t extra, bool write,
                        int t, const char *what, const std::vector<Bound> &bounds = {}) {
        if (!err.empty()) return;
        if (buf < 0 || static_cast<size_t>(buf) >= L.buffers.size()) {
          err = fmt::format("kernel {}: {} of buffer index {}", t, what, buf);
          return;
        }
        int64_t lo = idx.constant, hi = idx.constant;
        const char *where = "";
        if (!bounds.empty()) {
          // Too many iterations to enumerate: only the lifetimes are checked.
          if (!boundedRange(k, idx, bounds, lo, hi)) lo = hi = 0;
          where = " where its bounds hold";
        } else {
          for (auto [v, c] : idx.terms) {
            auto l = std::find_if(k.loops.begin(), k.loops.end(), [&](const Loop &x) { return x.var == v; });
            if (l == k.loops.end()) {
              err = fmt::format("kernel {}: {} of {} uses loop variable {}, which no loop defines", t,
                                what, L.buffers[static_cast<size_t>(buf)].name, v);
              return;
            }
            int64_t ext = l->batch ? n : l->extent;
            if (ext <= 0) return; // the loop never runs
            lo += std::min<int64_t>(0, c * (ext - 1));
            hi += std::max<int64_t>(0, c * (ext - 1));
          }
        }
        const Buffer &b = L.buffers[static_cast<size_t>(buf)];
        auto [s, e] = region(b);
        if (lo < 0 || s + hi + extra >= e)
          err = fmt::format("n={}: kernel {} ({}): {} of buffer {} at [{}, {}] outside [0, {}){}", n,
                            t, k.comment, what, b.name, lo, hi + extra, e - s, where);
        if (!err.empty() || b.space != Space::Workspace) return;
        auto it = life.find(buf);
        if (it == life.end()) life[buf] = {t, t};
        else it->second.second = t;
        if (write) written[buf] = true;
        else if (!written[buf])
          err = fmt::format("kernel {} ({}): reads workspace buffer {} before anything writes it",
                            t, k.comment, b.name);
      };
      for (size_t ti = 0; ti < f->kernels.size() && err.empty(); ++ti) {
        const Kernel &k = f->kernels[ti];
        const int t = static_cast<int>(ti);
        for (const loops::Expr &e : k.pool) {
          for (int o : {e.a, e.b, e.c, e.d})
            if (o >= 0 && static_cast<size_t>(o) >= k.pool.size())
              return fmt::format("kernel {}: an operand outside the expression pool", t);
          // A windowed Gemm's A (the load without the row variable) reaches as far as its tables.
          const bool windowA = k.mode == Kernel::Gemm && !k.aRows.empty() && k.loops.size() >= 3 &&
                               std::none_of(e.index.terms.begin(), e.index.terms.end(), [&](auto &term) {
                                 return term.first == k.loops[k.loops.size() - 3].var ||
                                        term.first == k.loops[k.loops.size() - 1].var;
                               });
          if (e.kind == loops::Expr::Load)
            access(k, e.buffer, e.index, windowA ? k.aRows.max() + k.aCols.max() : 0, false, t, "a load", e.bounds);
        }
        if (k.mode == Kernel::Softmax) access(k, k.in, k.inIndex, k.cols - 1, false, t, "the softmax input");
        bool reads = k.mode == Kernel::Accumulate || (k.mode == Kernel::Gemm && k.accumulate);
        if (reads) access(k, k.out, k.outIndex, 0, false, t, "the accumulated output", k.outBounds);
        access(k, k.out, k.outIndex, k.mode == Kernel::Softmax ? k.cols - 1 : 0, true, t, "the output", k.outBounds);
      }
      if (err.empty() && f->result >= 0) {
        Kernel none;
        access(none, f->result, Affine{}, 0, false, static_cast<int>(f->kernels.size()), "the result");
      }
      if (!err.empty()) return fmt::format("func {}: {}", f->name, err);
      for (auto i = life.begin(); i != life.end(); ++i)
        for (auto j = std::next(i); j != life.end(); ++j) {
          auto [si, ei] = region(L.buffers[static_cast<size_t>(i->first)]);
          auto [sj, ej] = region(L.buffers[static_cast<size_t>(j->first)]);
          bool memory = si < ej && sj < ei;
          bool time = i->second.first <= j->second.second && j->second.first <= i->second.second;
          if (memory && time)
            return fmt::format("func {}, n={}: workspace buffers {} and {} share memory while both live",
                               f->name, n, L.buffers[static_cast<size_t>(i->first)].name,
                               L.buffers[static_cast<size_t>(j->first)].name);
        }
    }
  }
  return "";
}

} // namespace nabla::fuzz
