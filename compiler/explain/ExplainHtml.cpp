// The page of `nabla explain --html`: the explanation as JSON, the graph as inline SVG, and a small
// script that shows an entry when its node (or its name in the index) is clicked.
#include "ExplainHtml.h"

#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <cmath>

namespace nabla {

std::string jsonQuote(const std::string &s) {
  std::string out = "\"";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (ch) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '<': out += "\\u003c"; break;
    case '>': out += "\\u003e"; break;
    case '&': out += "\\u0026"; break;
    default:
      if (c < 0x20) out += fmt::format("\\u{:04x}", c);
      else out += ch; // UTF-8 as it is (ᵀ, ⊗, Σ)
    }
  }
  return out + "\"";
}

std::string htmlEscape(const std::string &s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    case '\'': out += "&#39;"; break;
    default: out += ch;
    }
  }
  return out;
}

namespace {

// A number of the data: shortest round-trip text; a non-finite one as null (JSON has no inf).
std::string jsonNumber(double v) { return std::isfinite(v) ? formatNumber(v) : "null"; }

std::string jsonNumbers(const std::vector<double> &v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + jsonNumber(v[i]);
  return out + "]";
}

std::string jsonStrings(const std::vector<std::string> &v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + jsonQuote(v[i]);
  return out + "]";
}

// The SVG element alone: dot's XML declaration, doctype and comments go (an HTML page has its own).
std::string svgElement(const std::string &svg) {
  const size_t at = svg.find("<svg");
  return at == std::string::npos ? "" : svg.substr(at);
}

const char *kStyle = R"CSS(
:root { --ink: #1d1d1f; --muted: #6b6b70; --line: #d8d8de; --panel: #fafafc; }
* { box-sizing: border-box; }
html, body { height: 100%; }
body { margin: 0; display: flex; flex-direction: column; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); }
header { padding: 10px 18px; border-bottom: 1px solid var(--line); }
header h1 { font-size: 17px; margin: 0; }
header p { margin: 2px 0 0; color: var(--muted); }
main { flex: 1; min-height: 0; display: grid; grid-template-columns: minmax(260px, max-content) minmax(420px, 1fr); }
#graph { overflow: auto; padding: 8px; border-right: 1px solid var(--line); }
#graph svg { max-width: none; height: auto; }
#side { overflow: auto; padding: 12px 18px; background: var(--panel); }
.clickable { cursor: pointer; }
.clickable:hover polygon, .clickable:hover path, .clickable:hover ellipse { stroke-width: 3; }
.clickable:focus { outline: none; }
.clickable:focus-visible polygon, .clickable:focus-visible path { stroke-width: 3; stroke-dasharray: 4 2; }
.selected polygon, .selected path { fill: #ffe9a8 !important; }
code, .f { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
h2 { font-size: 18px; margin: 4px 0 2px; }
h2 small { font-weight: normal; color: var(--muted); font-size: 13px; }
h3 { font-size: 13px; font-weight: 600; color: var(--muted); margin: 16px 0 6px; }
.whole { padding: 8px 10px; background: #fff; border: 1px solid var(--line); border-radius: 6px; overflow-x: auto; white-space: pre; }
table { border-collapse: collapse; width: 100%; }
td { padding: 4px 6px; border-top: 1px solid var(--line); vertical-align: top; }
td.sw { width: 14px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-top: 3px; }
.from { color: var(--muted); white-space: nowrap; }
.num { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; color: #0b5; white-space: pre-wrap; }
.elem { margin: 0 0 6px; white-space: pre-wrap; }
.note { color: var(--muted); font-style: italic; }
#index { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 6px; }
#index button { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; border: 1px solid var(--line); background: #fff; border-radius: 4px; padding: 2px 6px; cursor: pointer; }
#index button.param { background: #fff3c4; }
#index button.on { outline: 2px solid #333; }
.hint { color: var(--muted); }
)CSS";

// (No innerHTML with the data: every text goes in through textContent.)
const char *kScript = R"JS(
(function () {
  const D = JSON.parse(document.getElementById('nabla-data').textContent);
  const side = document.getElementById('detail');
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
  // Four significant digits, as the text of `nabla explain` prints them.
  const num = x => x === null ? 'not finite' : String(Number(x.toPrecision(4)));
  const dims = shape => (shape.match(/\d+/g) || []).map(Number);
  // A flat row-major array in its shape's nesting.
  function nested(v, shape) {
    const d = dims(shape);
    const rec = (off, k) => {
      if (k >= d.length) return num(v[off]);
      let stride = 1; for (let j = k + 1; j < d.length; ++j) stride *= d[j];
      const parts = []; for (let i = 0; i < d[k]; ++i) parts.push(rec(off + i * stride, k + 1));
      return '[' + parts.join(', ') + ']';
    };
    return v.length > 64 ? '[' + v.slice(0, 64).map(num).join(', ') + ', … (' + v.length + ' numbers)]' : rec(0, 0);
  }
  const byNode = {};
  D.entries.forEach((e, i) => { if (e.node) (byNode[e.node] = byNode[e.node] || []).push(i); });
  // A node of a recurrence's steps shows the block over t (hs.h[t]) before a single step's entry.
  const overT = i => /\[[^\]0-9]/.test(D.entries[i].name) ? 0 : 1;
  for (const id in byNode) byNode[id].sort((a, b) => overT(a) - overT(b) || a - b);
  function shapesOf(id) { const g = document.getElementById(id); return g ? g.querySelectorAll('polygon, path, ellipse') : []; }
  let marked = [];
  function unmark() {
    for (const [s, stroke, width] of marked) { s.setAttribute('stroke', stroke); s.setAttribute('stroke-width', width); }
    marked = [];
    document.querySelectorAll('.selected').forEach(g => g.classList.remove('selected'));
    document.querySelectorAll('#index button.on').forEach(b => b.classList.remove('on'));
  }
  function mark(id, colour) {
    for (const s of shapesOf(id)) {
      marked.push([s, s.getAttribute('stroke'), s.getAttribute('stroke-width')]);
      s.setAttribute('stroke', colour); s.setAttribute('stroke-width', '4');
    }
  }
  function show(i) {
    const e = D.entries[i];
    unmark();
    if (e.node && document.getElementById(e.node)) document.getElementById(e.node).classList.add('selected');
    const b = document.getElementById('ix' + i); if (b) b.classList.add('on');
    side.replaceChildren();
    const h = el('h2', null, e.name + ' ');
    h.appendChild(el('small', null, (e.isParam ? 'param ' : '') + e.shape + (e.line ? ', line ' + e.line : '')));
    side.appendChild(h);
    // the other entries drawn as the same node (the steps of a recurrence, a second name)
    const same = e.node ? byNode[e.node].filter(j => j !== i) : [];
    if (same.length) {
      const p = el('p', 'hint', 'also at this node: ');
      same.forEach(j => { const a = el('button', null, D.entries[j].name); a.onclick = () => show(j); p.appendChild(a); });
      side.appendChild(p);
    }
    side.appendChild(el('h3', null, 'gradient'));
    side.appendChild(el('div', 'whole f', e.gradient + ' = ' + (e.formula || '0')));
    if (e.numbers) side.appendChild(el('div', 'num', '= ' + nested(e.numbers, e.shape)));
    if (e.note) side.appendChild(el('p', 'note', e.note));
    if (e.terms.length) {
      side.appendChild(el('h3', null, e.terms.length > 1
        ? 'the sum over its ' + e.terms.length + ' consumers: ' + e.gradient + ' = Σ_j d' + D.loss + '/dz_j · dz_j/d' + e.name
        : 'from its one consumer'));
      const t = el('table');
      e.terms.forEach((term, k) => {
        const c = D.consumers[term.c];
        const tr = el('tr', 'term');
        const sw = el('td', 'sw'); const s = el('span', 'swatch'); s.style.background = c.colour; sw.appendChild(s); tr.appendChild(sw);
        const f = el('td', 'f', (k ? '+ ' : '') + (term.steps ? 'Σ_{' + term.steps + '} ' : '') + term.formula);
        if (term.value) f.appendChild(el('div', 'num', '= ' + nested(term.value, e.shape)));
        tr.appendChild(f);
        tr.appendChild(el('td', 'from', '← from ' + term.consumer + (term.line ? ', line ' + term.line : '')));
        t.appendChild(tr);
        if (c.node) mark(c.node, c.colour);
      });
      side.appendChild(t);
    }
    if (e.perElement.length) {
      side.appendChild(el('h3', null, 'element by element'));
      for (const s of e.perElement) {
        let text = s.lhs + ' = ' + (s.terms.length ? s.terms.join(' + ') : '0');
        if (s.values.length && s.terms.length > 1) text += '\n     = ' + s.values.map(num).join(' + ');
        if (s.total !== null && s.total !== undefined) text += ' = ' + num(s.total);
        side.appendChild(el('div', 'elem f', text));
      }
    }
    if (e.forward) {
      side.appendChild(el('h3', null, 'its value in this example'));
      side.appendChild(el('div', 'num', e.name + ' = ' + nested(e.forward, e.shape)));
    }
    if (location.hash !== '#' + encodeURIComponent(e.name)) history.replaceState(null, '', '#' + encodeURIComponent(e.name));
  }
  for (const id in byNode) {
    const g = document.getElementById(id);
    if (!g) continue;
    g.classList.add('clickable');
    g.addEventListener('click', () => show(byNode[id][0]));
    // (reachable by keyboard too: Tab to a node, Enter or Space to open it)
    g.setAttribute('tabindex', '0');
    g.setAttribute('role', 'button');
    g.addEventListener('keydown', ev => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); show(byNode[id][0]); } });
  }
  const index = document.getElementById('index');
  D.entries.forEach((e, i) => {
    const b = el('button', e.isParam ? 'param' : null, e.name);
    b.id = 'ix' + i; b.onclick = () => show(i);
    index.appendChild(b);
  });
  const want = decodeURIComponent(location.hash.slice(1));
  const first = D.entries.findIndex(e => e.name === want);
  if (first >= 0) show(first);
})();
)JS";

} // namespace

std::string explainHtml(const Explanation &e, const DotGraph &graph, const std::string &svg) {
  // The consumers in colour order (their colours are the graph's: the node of z_j is drawn in the
  // colour of the terms that flow from it).
  std::unordered_map<std::string, size_t> consumerIndex;
  std::string consumers = "[";
  for (size_t k = 0; k < graph.consumers.size(); ++k) {
    consumerIndex.emplace(graph.consumers[k], k);
    const NodeId n = drawnNodeOf(graph, graph.consumers[k]);
    consumers += fmt::format("{}{{\"name\":{},\"colour\":{},\"node\":{}}}", k ? "," : "", jsonQuote(graph.consumers[k]),
                             jsonQuote(consumerColour(k)), n == kNoNode ? "null" : jsonQuote(dotNodeId(n)));
  }
  consumers += "]";
  std::string entries = "[";
  for (size_t i = 0; i < e.entries.size(); ++i) {
    const ExplainEntry &en = e.entries[i];
    const NodeId n = drawnNodeOf(graph, en.name);
    std::string terms = "[";
    for (size_t k = 0; k < en.terms.size(); ++k) {
      const ExplainTerm &t = en.terms[k];
      auto c = consumerIndex.find(t.consumer);
      terms += fmt::format("{}{{\"consumer\":{},\"c\":{},\"line\":{},\"formula\":{},\"steps\":{},\"value\":{}}}",
                           k ? "," : "", jsonQuote(t.consumer), c == consumerIndex.end() ? 0 : c->second, t.line,
                           jsonQuote(t.formula), jsonQuote(t.steps), t.value ? jsonNumbers(*t.value) : "null");
    }
    terms += "]";
    std::string elems = "[";
    for (size_t k = 0; k < en.perElement.size(); ++k) {
      const ExplainScalar &s = en.perElement[k];
      elems += fmt::format("{}{{\"lhs\":{},\"terms\":{},\"values\":{},\"total\":{}}}", k ? "," : "", jsonQuote(s.lhs),
                           jsonStrings(s.terms), jsonNumbers(s.values), s.total ? jsonNumber(*s.total) : "null");
    }
    elems += "]";
    entries += fmt::format(
        "{}\n{{\"name\":{},\"isParam\":{},\"line\":{},\"shape\":{},\"gradient\":{},\"formula\":{},\"note\":{},"
        "\"node\":{},\"terms\":{},\"perElement\":{},\"forward\":{},\"numbers\":{}}}",
        i ? "," : "", jsonQuote(en.name), en.isParam ? "true" : "false", en.line, jsonQuote(en.shape),
        jsonQuote(en.gradient), jsonQuote(en.formula), jsonQuote(en.note),
        n == kNoNode ? "null" : jsonQuote(dotNodeId(n)), terms, elems, en.forward ? jsonNumbers(*en.forward) : "null",
        en.numbers ? jsonNumbers(*en.numbers) : "null");
  }
  entries += "]";
  const std::string data = fmt::format(
      "{{\"file\":{},\"loss\":{},\"example\":{},\"lossValue\":{},\"consumers\":{},\"entries\":{},\"notes\":{}}}",
      jsonQuote(e.file), jsonQuote(e.loss), jsonQuote(e.example), e.lossValue ? jsonNumber(*e.lossValue) : "null",
      consumers, entries, jsonStrings(e.notes));

  std::string sub = fmt::format("The gradient of {} by the chain rule through each value's consumers: "
                                "d{}/dy = Σ over the consumers z of y of d{}/dz · dz/dy. Click a value or param.",
                                e.loss, e.loss, e.loss);
  if (!e.example.empty()) {
    sub += " The example: " + e.example;
    if (e.lossValue) sub += fmt::format("; {} = {:.4g}", e.loss, *e.lossValue);
    sub += ".";
  }
  std::string notes;
  for (const std::string &n : e.notes) notes += "<p class=\"note\">" + htmlEscape(n) + "</p>\n";
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  // (no network: a policy that allows nothing from outside this file)
  html += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
          "script-src 'unsafe-inline'; img-src data:\">\n";
  html += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  html += "<title>nabla explain " + htmlEscape(e.file) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  html += "<header><h1>nabla explain " + htmlEscape(e.file) + "</h1><p>" + htmlEscape(sub) + "</p></header>\n";
  html += "<main>\n<div id=\"graph\">\n" + svgElement(svg) + "\n</div>\n";
  html += "<div id=\"side\">\n<div id=\"detail\"><p class=\"hint\">Click a value or param in the graph, or a "
          "name below, to see its gradient as the sum of its consumers' terms.</p></div>\n";
  html += "<h3>every value and param, from the loss backwards</h3>\n<div id=\"index\"></div>\n" + notes + "</div>\n</main>\n";
  html += "<script type=\"application/json\" id=\"nabla-data\">" + data + "</script>\n";
  html += std::string("<script>") + kScript + "</script>\n</body>\n</html>\n";
  return html;
}

} // namespace nabla
