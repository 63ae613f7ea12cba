// Graphviz: lays out dot text by running Graphviz's `dot` (Debian package graphviz) from PATH as a
// subprocess. nabla writes the graph (compiler/explain/GraphDot.h); placing nodes and routing edges is
// Graphviz's job, not ours.
#pragma once
#include "Expected.h"

#include <string>

namespace nabla {

// The full path of `dot` found on PATH, or "" when there is none.
std::string findDot();

// `dot -T<format>` on `dotText` (format: "svg", "png", ...): its standard output. Errors: no
// `dot` on PATH (a message that says which package to install, and that .dot output needs
// nothing), dot failing (its exit status and standard error), or dot still working after
// `timeoutSeconds` (it is killed: dot's layout is superlinear, and a graph of thousands of
// crossing edges can take hours; nabla never hangs).
Expected<std::string> runDot(const std::string &dotText, const std::string &format = "svg",
                             int timeoutSeconds = 120);

} // namespace nabla
