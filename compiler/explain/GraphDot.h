// GraphDot: `nabla graph`, the program as a picture. The forward graph (every op node reachable
// from the program's values, named nodes by their source names, each with its op and shape) as
// Graphviz's dot language, and, given an explanation (Explain.h), the gradient graph beside it:
// one node dE/dNAME per value and param, and for every term of the chain rule
// dE/dy_i = Σ_j dE/dz_j · dz_j/dy_i an edge from the consumer z_j's adjoint to y_i's, labelled by
// the term and coloured by the consumer (the forward node z_j is drawn in the same colour).
//
// Laying it out is Graphviz's job (runtime/Graphviz.h runs `dot`); this file only writes text.
#pragma once
#include "Program.h"

#include <string>
#include <unordered_map>
#include <vector>

namespace nabla {

struct Explanation;

// The dot id of a forward node: "n12" (an SVG <g id="n12"> after `dot -Tsvg`).
std::string dotNodeId(NodeId id);

// One colour per consumer, in the order of first appearance: "#1f77b4", ...; distinct for any
// number of consumers (a fixed palette, then hues a golden angle apart).
std::string consumerColour(size_t index);

struct DotGraph {
  std::string text; // the dot source
  // The forward node each value, param, input and target is drawn as (by name); several names
  // may share a node (`h = x`).
  std::unordered_map<std::string, NodeId> nodeOf;
  // Where a recurrence's steps are rolled up: each family (hs.h) -> the node it is drawn as.
  std::unordered_map<std::string, NodeId> familyNode;
  // The consumers of the gradient's terms (ExplainTerm::consumer) in colour order: the colour of
  // consumer k is consumerColour(k).
  std::vector<std::string> consumers;
};

// How much of the forward graph is drawn: every op (unnamed ones as small ellipses), or the named
// values alone (each with its expression, edges through the unnamed ops it contains). Auto: ops
// up to kMaxOpNodes op nodes, else values (dot needs minutes for a thousand ops of an unrolled
// recurrence, and nobody reads that picture).
enum class GraphDetail { Auto, Ops, Values };
inline constexpr size_t kMaxOpNodes = 200;

// The forward node that a name of an explanation is drawn as (hs.h[t+1] and hs.h[3] as their
// family's node where the steps are rolled up), or kNoNode when it is not drawn.
NodeId drawnNodeOf(const DotGraph &g, const std::string &name);

// The forward graph alone (grad == nullptr) or with the gradient cluster beside it.
// `title` labels the picture (the file's name).
// With gradientCluster false, the forward graph alone, its consumers still coloured (the page of
// `explain --html`).
DotGraph graphToDot(const Program &p, const Explanation *grad, const std::string &title,
                    GraphDetail detail = GraphDetail::Auto, bool gradientCluster = true);

// A dot quoted string's contents: `"` and `\` escaped, a line break as dot's \n.
std::string dotEscape(const std::string &s);

} // namespace nabla
