// ExplainHtml: the page of `nabla explain FILE --html F.html`. One self-contained file (inline
// CSS, script and SVG; no network, no external script or font): the forward graph as laid out by
// Graphviz, and beside it, for the value or param clicked, its gradient as its consumers' terms
// (each in the colour of its consumer's node), the per-element form and, with an example, the
// numbers. Everything comes from the Explanation that `nabla explain` prints as text.
#pragma once
#include "Explain.h"
#include "GraphDot.h"

#include <string>

namespace nabla {

// `graph` is the forward graph (graphToDot with e, gradientCluster false: its consumers and
// nodes) and `svg` what `dot -Tsvg` made of it (or of the same graph without colours).
std::string explainHtml(const Explanation &e, const DotGraph &graph, const std::string &svg);

// JSON string and HTML text escapes (the page's data is JSON inside a <script> element, so `<`,
// `>` and `&` are escaped too: no `</script>` can end it early).
std::string jsonQuote(const std::string &s);
std::string htmlEscape(const std::string &s);

} // namespace nabla
