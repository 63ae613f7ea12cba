// Sema: names and shapes. Resolves every name, infers and checks every shape (NumPy broadcasting,
// the four `@` forms, axes), desugars `dense`, and builds the forward graph of one example.
// Every user error is reported here or earlier, with its source location.
#pragma once
#include "AST.h"
#include "Diagnostics.h"
#include "Program.h"

#include <optional>

namespace nabla {

// Largest number of elements of one value; larger shapes are a user error, not an allocation
// failure.
inline constexpr int64_t kMaxElements = int64_t(1) << 28;

bool isReservedName(std::string_view name);

// "; did you mean 'y_j'?" for the candidate nearest a misspelt name (edits with transpositions,
// about one in three characters at most), else "".
std::string suggestName(std::string_view name, const std::vector<std::string> &candidates);

// Fills `program.graph`, decls, values, outputs and loss from `module`. Returns false (with
// diagnostics reported) when the program has errors.
bool analyze(const Module &module, Program &program, DiagnosticEngine &diags);

// The whole front end: lex, parse, analyze. On failure, the diagnostics say why.
std::optional<Program> compileSource(SourceFile file, std::string &diagnostics);

} // namespace nabla
