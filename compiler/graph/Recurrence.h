// Recurrence: the built-in recurrences `rnn`, `gru`, `lstm` and the generic `scan`, unrolled into
// the graph. A recurrence is a front-end construct (DESIGN.md): step t is ordinary nodes, so the
// shared weights' consumers are the T steps and autodiff's "sum over consumers" is
// backpropagation through time; the gradient printer groups the per-step terms as one Σ over t.
//
// The equations, param names, shapes and gate order are PyTorch's nn.RNN / nn.GRU / nn.LSTM with
// one layer, batch first (here: per example, the sequence xs is [T, d]) and a zero initial state,
// so trained weights move between the two by name:
//   rnn:  h_t = ACT(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)              ACT tanh or relu
//   gru:  r = σ(W_ir x + b_ir + W_hr h + b_hr)     gates r, z, n stacked in W_ih[3H, d] etc.
//         z = σ(W_iz x + b_iz + W_hz h + b_hz)
//         n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//         h' = (1 - z) * n + z * h
//   lstm: i, f, o = σ(...), g = tanh(...)           gates i, f, g, o stacked in W_ih[4H, d] etc.
//         c' = f * c + i * g,  h' = o * tanh(c')
#pragma once
#include "Graph.h"
#include "Program.h"

#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nabla {

enum class CellKind { RnnTanh, RnnRelu, Gru, Lstm };

// The gates stacked in W_ih's rows: 1 (rnn), 3 (gru), 4 (lstm).
int gateCount(CellKind k);

// The four params of a built-in recurrence, in PyTorch's (and the declaration) order.
inline constexpr std::array<std::string_view, 4> kRecurrenceParamNames = {"W_ih", "W_hh", "b_ih",
                                                                          "b_hh"};
// Their shapes for input size d and hidden size H: W_ih[G·H, d], W_hh[G·H, H], b_ih[G·H],
// b_hh[G·H] with G = gateCount(k).
std::array<Shape, 4> recurrenceParamShapes(CellKind k, int64_t d, int64_t H);
// PyTorch's initialization of every one of them: uniform in ±1/sqrt(H).
Init recurrenceInit(int64_t H);

struct RecurrenceParams {
  NodeId W_ih = kNoNode, W_hh = kNoNode, b_ih = kNoNode, b_hh = kNoNode;
};

struct Unrolled {
  NodeId states = kNoNode;       // every state stacked, [T, ...]
  std::vector<NodeId> h;         // h[t] = states[t], t = 0 .. T-1
  std::vector<StepValue> values; // (Program.h) per step, in step order; within a step, in
                                 // computation order: x (the row xs[t]), the gates, c, h
};

// Builds the unrolled forward graph of a built-in recurrence over xs [T, d] with hidden size H
// and the given params (of recurrenceParamShapes(k, d, H)). The initial state (and cell) is zero;
// the terms that would multiply it are not built, so step 0 reads only x_0.
Unrolled unrollRecurrence(Graph &g, CellKind k, NodeId xs, int64_t H, const RecurrenceParams &p);

// The generic recurrence: state_t = cell(state_(t-1), xs[t], t) with state_(-1) = init; `cell`
// builds one step (and must return a node of init's shape). The value stacks state_0 ..
// state_(T-1); init is not part of it.
Unrolled unrollScan(Graph &g, NodeId init, NodeId xs,
                    const std::function<NodeId(NodeId state, NodeId x, int64_t t)> &cell);

// xs[t]: row t of a value of rank >= 1, without its first axis (a Slice, then a Reshape).
NodeId stepOf(Graph &g, NodeId xs, int64_t t);

// rows (all of one shape S) stacked along a new first axis: [rows.size(), S...]. A balanced tree
// of Concats of [1, S...] reshapes, so that a naive lowering copies each row log2(T) times, not T.
NodeId stackRows(Graph &g, const std::vector<NodeId> &rows);

} // namespace nabla
