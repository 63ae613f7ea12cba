// Text forms of a checked program: the `check` listing (every input, target, param, value,
// output and the loss with its shape) and the graph dump (`check --emit graph`).
#pragma once
#include "Program.h"

#include <string>

namespace nabla {

std::string describeProgram(const Program &p);

// One node a line, `%id = op operands : shape`, with source names where a node has one.
// Only nodes reachable from `roots` are printed; named roots are listed at the end.
std::string dumpGraph(const Graph &g, const std::vector<std::pair<std::string, NodeId>> &roots,
                      const Program *names = nullptr);

// A param's initializer as the source writes it: "= 0", "~ normal(0, 0.1)", "~ glorot".
std::string describeInit(const Decl &d);

// Shortest text that reads back as the same double ("0.5", "1e-07", "3").
std::string formatNumber(double v);

} // namespace nabla
