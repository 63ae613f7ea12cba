// Graphviz: lays out dot text by running Graphviz's `dot` (Debian package graphviz) from PATH as a
// subprocess. nabla writes the graph (compiler/GraphDot.h); placing nodes and routing edges is
// Graphviz's job, not ours.
#pragma once
#include "Expected.h"

#include <string>

namespace nabla {

// The full path of `dot` found on PATH, or "" when there is none.
std::string findDot();

// `dot -T<format>` on `dotText` (format: "svg", "png", ...): its standard output. Errors: no
// `dot` on PATH (a message that says which package to install, and that .dot output needs
// nothing), or dot failing (its exit status and standard error).
Expected<std::string> runDot(const std::string &dotText, const std::string &format = "svg");

} // namespace nabla
