// Source files and locations. Every token and AST node carries a SourceLoc (1-based line and
// column, counted in bytes) so that every diagnostic can point at its place.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace nabla {

struct SourceLoc {
  uint32_t line = 0;   // 1-based; 0 = no location
  uint32_t col = 0;    // 1-based byte column
  uint32_t offset = 0; // byte offset into the file
  bool valid() const { return line != 0; }
};

struct SourceRange {
  SourceLoc begin;
  uint32_t length = 1; // bytes, at least 1, clipped to the line when printed
};

struct SourceFile {
  std::string name; // as the user gave it
  std::string text;

  // The text of line `line` (1-based) without its line break.
  std::string_view lineText(uint32_t line) const;
};

// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not valid UTF-8.
size_t utf8Length(std::string_view s, size_t i);

} // namespace nabla
