// The C++ backend (see EmitCpp.h): Loop IR printed as standalone C++17. Each kernel becomes one
// block with its buffers as __restrict pointers and a loop nest with constant trip counts (only
// the batch loop runs to n); the expression of a kernel is printed as one C++ expression, with
// the stable forms (logistic, softplus, tanh, log1p) as small inline helpers that compute exactly
// what EmitLLVM emits. Adding a kernel kind to the Loop IR means adding one function here
// (see KernelPrinter::print).
#include "EmitCpp.h"

#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>

namespace nabla {

using loops::Kernel;
using LExpr = loops::Expr;

// --- names -----------------------------------------------------------------------------------

bool isCppKeyword(std::string_view w) {
  // C++20's keywords and alternative tokens, and the transactional-memory TS's reserved words.
  static const std::set<std::string_view> kKeywords = {
      "alignas", "alignof", "and", "and_eq", "asm", "atomic_cancel", "atomic_commit",
      "atomic_noexcept", "auto", "bitand", "bitor", "bool", "break", "case", "catch", "char",
      "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval",
      "constexpr", "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield",
      "decltype", "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit",
      "export", "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long",
      "mutable", "namespace", "new", "noexcept", "not", "not_eq", "nullptr", "operator", "or",
      "or_eq", "private", "protected", "public", "reflexpr", "register", "reinterpret_cast",
      "requires", "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast",
      "struct", "switch", "synchronized", "template", "this", "thread_local", "throw", "true", "try",
      "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile",
      "wchar_t", "while", "xor", "xor_eq"};
  return kKeywords.count(w) != 0;
}

// Whether `w`, as the name of a namespace at global scope, breaks the emitted files: a macro or a
// global name of the headers they include (glibc and libstdc++ in ISO and GNU modes, g++ and
// clang: NULL, EOF, errno, unix, linux, size_t, FILE, index, random, y0...), a name the emitted
// files use unqualified outside the namespace (real, main, usage...), or a name the standard
// reserves (std, std2, posix).
bool isReservedGlobalName(std::string_view w) {
  static constexpr std::string_view kNames[] = {
#include "CppReservedNames.inc"
  };
  if (std::binary_search(std::begin(kNames), std::end(kNames), w)) return true;
  if (w == "posix" || w.substr(0, 3) == "std")
    return w == "posix" || w.find_first_not_of("0123456789", 3) == std::string_view::npos;
  return false;
}

std::string cppName(std::string_view stem) {
  // Letters, digits and '_' stay, any other byte (of UTF-8 too) becomes '_', and a run of '_' is
  // one: "__" anywhere in a name is reserved to the implementation, and so is a leading '_' at
  // global scope (hence the prefix).
  std::string s;
  for (char c : stem) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok || c == '_') {
      if (s.empty() || s.back() != '_') s += '_';
    } else {
      s += c;
    }
  }
  if (s.empty() || (s[0] >= '0' && s[0] <= '9') || isCppKeyword(s) || isReservedGlobalName(s))
    s = "nn_" + s;
  else if (s[0] == '_')
    s = "nn" + s;
  if (s.substr(0, 4) == "nn__") s.erase(2, 1);
  return s;
}

std::string cppNameForPath(std::string_view path) {
  size_t slash = path.find_last_of('/');
  std::string_view file = slash == std::string_view::npos ? path : path.substr(slash + 1);
  size_t dot = file.find_last_of('.');
  if (dot != std::string_view::npos && dot > 0) file = file.substr(0, dot);
  return cppName(file);
}

namespace {

// --- text helpers ----------------------------------------------------------------------------

// Text that is safe inside a // comment: valid UTF-8 (other bytes as '?'), no control characters,
// and no backslash at the end (which would continue the comment onto the next line).
std::string commentText(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c);
      ++i;
      continue;
    }
    size_t len = utf8Length(s, i);
    if (len == 0) {
      out += '?';
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (!out.empty() && out.back() == '\\') out += " (end of line)";
  return out;
}

// A C++ identifier made of `prefix` and `name`: other characters become '_', runs of '_' one.
std::string identifier(std::string_view prefix, std::string_view name) {
  std::string s(prefix);
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    char d = ok ? c : '_';
    if (d == '_' && !s.empty() && s.back() == '_') continue;
    s += d;
  }
  while (s.size() > 1 && s.back() == '_') s.pop_back();
  return s;
}

// The shortest text that reads back to v, as a floating literal ("2.0", "0.5", "1e+20").
std::string doubleText(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// The shortest text that reads back to the float v, with the f suffix.
std::string floatText(float v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s + "f";
}

struct Flags {
  bool f64 = false;
  bool limits = false; // <limits> needed (a non-finite constant)
};

// A constant as the backend computes it: the double rounded to `real` (EmitLLVM's
// ConstantFP::get(T, v)). A float literal where the double is a float exactly, else real(double).
std::string realLiteral(double v, Flags &f) {
  if (std::isnan(v)) {
    f.limits = true;
    return "std::numeric_limits<real>::quiet_NaN()";
  }
  if (std::isinf(v)) {
    f.limits = true;
    return v > 0 ? "std::numeric_limits<real>::infinity()" : "(-std::numeric_limits<real>::infinity())";
  }
  std::string s;
  if (f.f64) s = doubleText(v);
  else if (static_cast<double>(static_cast<float>(v)) == v) s = floatText(static_cast<float>(v));
  else return "real(" + doubleText(v) + ")";
  return s[0] == '-' ? "(" + s + ")" : s;
}

// --- helpers: the stable forms, exactly as EmitLLVM computes them ------------------------------

enum Helper { HExp, HLogistic, HTanh, HLog1p, HSoftplus, HRelu, HStep, HSign, HSquare, HMax, HGelu, HElu, HLeakyRelu,
              HMaximum, HMinimum, HGe, kHelpers };

const char *helperName(Helper h) {
  static const char *names[] = {"nn_exp", "nn_logistic", "nn_tanh", "nn_log1p", "nn_softplus", "nn_relu",
                                "nn_step",     "nn_sign", "nn_square",   "nn_max",
                                "nn_gelu",     "nn_elu",  "nn_leaky_relu", "nn_maximum",
                                "nn_minimum",  "nn_ge"};
  return names[h];
}

// exp(x) in plain arithmetic, so that compilers vectorize the loops it is in (the JIT calls a
// vector exp; std::exp stays a scalar library call without -ffast-math): x = k ln2 + r with
// |r| <= ln2 / 2, exp(r) by its Taylor series (to r^7 in float, r^13 in double: below half an
// ulp), times 2^k built in the exponent bits, as 2^(k/2) 2^(k - k/2) so that results below the
// smallest normal number round once. Beyond the range of real: 0 and infinity; NaN stays NaN.
std::string expText(bool f64) {
  std::string s =
      "// exp(x) in plain arithmetic, so that loops vectorize: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its\n"
      "// Taylor series, times 2^k built in the exponent bits (as 2^(k/2) 2^(k - k/2), so that a result\n"
      "// below the smallest normal number rounds once).\n"
      "inline real nn_exp(real x) {\n";
  if (f64) {
    s += "  const double magic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer\n"
         "  const double t = x * 1.4426950408889634074 + magic, kf = t - magic;\n"
         "  const double r = (x - kf * 6.93145751953125E-1) - kf * 1.42860682030941723212E-6;\n"
         "  double p = 1.0 / 6227020800.0;\n"
         "  p = p * r + 1.0 / 479001600.0;\n"
         "  p = p * r + 1.0 / 39916800.0;\n"
         "  p = p * r + 1.0 / 3628800.0;\n"
         "  p = p * r + 1.0 / 362880.0;\n"
         "  p = p * r + 1.0 / 40320.0;\n"
         "  p = p * r + 1.0 / 5040.0;\n"
         "  p = p * r + 1.0 / 720.0;\n"
         "  p = p * r + 1.0 / 120.0;\n"
         "  p = p * r + 1.0 / 24.0;\n"
         "  p = p * r + 1.0 / 6.0;\n"
         "  p = p * r + 0.5;\n"
         "  p = p * r + 1.0;\n"
         "  p = p * r + 1.0;\n"
         "  std::uint64_t tb, mb;\n"
         "  std::memcpy(&tb, &t, sizeof tb);\n"
         "  std::memcpy(&mb, &magic, sizeof mb);\n"
         "  const std::uint64_t k = tb - mb, k1 = static_cast<std::uint64_t>(static_cast<std::int64_t>(k) >> 1), k2 = k - k1;\n"
         "  const std::uint64_t b1 = (k1 + 1023) << 52, b2 = (k2 + 1023) << 52;\n"
         "  double s1, s2;\n"
         "  std::memcpy(&s1, &b1, sizeof s1);\n"
         "  std::memcpy(&s2, &b2, sizeof s2);\n"
         "  const double y = p * s1 * s2;\n"
         "  return x > 709.782712893384 ? std::numeric_limits<double>::infinity() : x < -745.1332191019412 ? 0.0 : y;\n";
  } else {
    s += "  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer\n"
         "  const float t = x * 1.44269504f + magic, kf = t - magic;\n"
         "  const float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;\n"
         "  float p = 1.0f / 5040.0f;\n"
         "  p = p * r + 1.0f / 720.0f;\n"
         "  p = p * r + 1.0f / 120.0f;\n"
         "  p = p * r + 1.0f / 24.0f;\n"
         "  p = p * r + 1.0f / 6.0f;\n"
         "  p = p * r + 0.5f;\n"
         "  p = p * r + 1.0f;\n"
         "  p = p * r + 1.0f;\n"
         "  std::uint32_t tb, mb;\n"
         "  std::memcpy(&tb, &t, sizeof tb);\n"
         "  std::memcpy(&mb, &magic, sizeof mb);\n"
         "  const std::uint32_t k = tb - mb, k1 = static_cast<std::uint32_t>(static_cast<std::int32_t>(k) >> 1), k2 = k - k1;\n"
         "  const std::uint32_t b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;\n"
         "  float s1, s2;\n"
         "  std::memcpy(&s1, &b1, sizeof s1);\n"
         "  std::memcpy(&s2, &b2, sizeof s2);\n"
         "  const float y = p * s1 * s2;\n"
         "  return x > 88.7228317f ? std::numeric_limits<float>::infinity() : x < -103.972084f ? 0.0f : y;\n";
  }
  return s + "}\n";
}

// tanh in float: the JIT's (EmitLLVM's tanhF32, Eigen's generic_fast_tanh_float), a rational
// function on [-7.905, 7.905] where tanh rounds to ±1 beyond, x itself where |x| < 0.0004: no exp
// and one division, and the same numbers as the JIT's code.
const char *kTanhF32 =
    "// tanh in float: p(x) / q(x) on [-7.905, 7.905] (p odd of degree 13, q even of degree 6; a few\n"
    "// ulp), where tanh rounds to +-1 beyond; x itself where |x| < 0.0004. Branch-free.\n"
    "inline float nn_tanh(float a) {\n"
    "  const float c = 7.90531110763549805f;\n"
    "  const float x = a > c ? c : a < -c ? -c : a, x2 = x * x;\n"
    "  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;\n"
    "  p = x2 * p + -8.60467152213735e-11f;\n"
    "  p = x2 * p + 5.12229709037114e-08f;\n"
    "  p = x2 * p + 1.48572235717979e-05f;\n"
    "  p = x2 * p + 6.37261928875436e-04f;\n"
    "  p = x2 * p + 4.89352455891786e-03f;\n"
    "  p = x * p;\n"
    "  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;\n"
    "  q = x2 * q + 2.26843463243900e-03f;\n"
    "  q = x2 * q + 4.89352518554385e-03f;\n"
    "  return std::fabs(a) < 0.0004f ? a : p / q;\n"
    "}\n";

std::string helperText(Helper h) {
  switch (h) {
  case HExp: return "";
  case HLogistic:
    return "// logistic(x) = 1 / (1 + exp(-x)) without overflow: e = exp(-|x|), r = 1 / (1 + e);\n"
           "// x >= 0 ? r : e * r.\n"
           "inline real nn_logistic(real x) {\n"
           "  const real e = nn_exp(-std::fabs(x));\n"
           "  const real r = real(1) / (real(1) + e);\n"
           "  return x >= real(0) ? r : e * r;\n"
           "}\n";
  case HTanh:
    return "// tanh, branch-free so that loops vectorize: |x| < 0.625: x + x z P(z) / Q(z), z = x^2\n"
           "// (Cephes' rational form, 4e-16 relative in double); else sign(x) (1 - 2 / (exp(2|x|) + 1)).\n"
           "inline real nn_tanh(real x) {\n"
           "  const real ax = std::fabs(x), z = x * x;\n"
           "  const real p = (real(-9.64399179425052238628E-1) * z + real(-9.92877231001918586564E1)) * z +\n"
           "                 real(-1.61468768441708447952E3);\n"
           "  const real q = ((z + real(1.12811678491632931402E2)) * z + real(2.23548839060100448583E3)) * z +\n"
           "                 real(4.84406305325125486048E3);\n"
           "  const real small = x + x * z * p / q;\n"
           "  const real big = std::copysign(real(1) - real(2) / (nn_exp(real(2) * ax) + real(1)), x);\n"
           "  return ax < real(0.625) ? small : big;\n"
           "}\n";
  case HLog1p:
    return "// log1p(e) for e >= 0 without a library call (Goldberg): with u = 1 + e rounded,\n"
           "// log(u) * e / (u - 1) is accurate to a few ulp; where u == 1, log1p(e) = e.\n"
           "inline real nn_log1p(real e) {\n"
           "  const real u = real(1) + e, d = u - real(1);\n"
           "  return d == real(0) ? e : std::log(u) * e / d;\n"
           "}\n";
  case HSoftplus:
    return "// softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), without overflow.\n"
           "inline real nn_softplus(real x) {\n"
           "  const real m = x > real(0) ? x : real(0);\n"
           "  return m + nn_log1p(nn_exp(-std::fabs(x)));\n"
           "}\n";
  case HRelu: return "inline real nn_relu(real x) { return x > real(0) ? x : real(0); }\n";
  case HStep:
    return "// relu'(x), with relu'(0) = 0\n"
           "inline real nn_step(real x) { return x > real(0) ? real(1) : real(0); }\n";
  case HSign:
    return "// abs'(x), with abs'(0) = 0\n"
           "inline real nn_sign(real x) { return x > real(0) ? real(1) : x < real(0) ? real(-1) : real(0); }\n";
  case HSquare: return "inline real nn_square(real x) { return x * x; }\n";
  case HMax: return "inline real nn_max(real a, real b) { return a > b ? a : b; }\n";
  case HGelu:
    return "// gelu(x) = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (no cancellation for large negative x).\n"
           "inline real nn_gelu(real x) { return x * (real(0.5) * std::erfc(x * real(-0.70710678118654752440))); }\n";
  case HElu: return "inline real nn_elu(real x) { return x > real(0) ? x : std::expm1(x); }\n";
  case HLeakyRelu: return "inline real nn_leaky_relu(real x, real slope) { return x > real(0) ? x : slope * x; }\n";
  case HMaximum:
    return "// maximum and minimum keep a at a tie; ge is maximum's derivative.\n"
           "inline real nn_maximum(real a, real b) { return a >= b ? a : b; }\n";
  case HMinimum: return "inline real nn_minimum(real a, real b) { return a <= b ? a : b; }\n";
  case HGe: return "inline real nn_ge(real a, real b) { return a >= b ? real(1) : real(0); }\n";
  case kHelpers: break;
  }
  return "";
}

// The register tile of a matrix product, as the JIT tiles it: 8 rows of C by one nn_vec (kTile
// columns) whose sums stay in registers across a chunk of k; each k step loads one nn_vec of B's
// row and broadcasts one value of A a row. nn_vec is two AVX-512 vectors (16 sums in 32
// registers), else one AVX2 vector (8 sums in 16), else a plain array of 16 bytes that compilers
// keep in whatever registers they have: the intrinsics only behind #if, standard C++ otherwise.
// A mask (the columns left over at the right edge) limits loads and stores to the first lanes.
std::string tileText(bool f64) {
  const char *text = R"(// Register tiles of matrix products: 8 rows by one nn_vec of kTile columns, the sums in
// registers across kChunk values of k (B's panel of kChunk x kTile stays in the L1 cache).
constexpr std::size_t kChunk = 128;
#if defined(__AVX512F__)
constexpr std::size_t kTile = 2 * 64 / sizeof(real);
struct nn_vec { @V@ lo, hi; };
struct nn_mask { @M@ lo, hi; };
inline nn_mask nn_mask_of(std::size_t w) {  // the first w < kTile lanes
  const unsigned long long bits = (1ull << w) - 1;
  return {static_cast<@M@>(bits), static_cast<@M@>(bits >> (kTile / 2))};
}
inline nn_vec nn_zero() { return {@P@_setzero_@S@(), @P@_setzero_@S@()}; }
inline nn_vec nn_splat(real a) { const @V@ v = @P@_set1_@S@(a); return {v, v}; }
inline nn_vec nn_load(const real* p) { return {@P@_loadu_@S@(p), @P@_loadu_@S@(p + kTile / 2)}; }
inline nn_vec nn_load(const real* p, nn_mask m) {
  return {@P@_maskz_loadu_@S@(m.lo, p), @P@_maskz_loadu_@S@(m.hi, p + kTile / 2)};
}
inline void nn_store(real* p, nn_vec v) { @P@_storeu_@S@(p, v.lo); @P@_storeu_@S@(p + kTile / 2, v.hi); }
inline void nn_store(real* p, nn_vec v, nn_mask m) {
  @P@_mask_storeu_@S@(p, m.lo, v.lo);
  @P@_mask_storeu_@S@(p + kTile / 2, m.hi, v.hi);
}
inline nn_vec nn_fma(nn_vec a, nn_vec b, nn_vec c) {  // a * b + c
  return {@P@_fmadd_@S@(a.lo, b.lo, c.lo), @P@_fmadd_@S@(a.hi, b.hi, c.hi)};
}
inline nn_vec nn_mul(nn_vec a, nn_vec b) { return {@P@_mul_@S@(a.lo, b.lo), @P@_mul_@S@(a.hi, b.hi)}; }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr std::size_t kTile = 32 / sizeof(real);
struct nn_vec { @V2@ v; };
struct nn_mask { __m256i v; };
inline nn_mask nn_mask_of(std::size_t w) {
  return {@CMP@(@SET1I@(static_cast<@IT@>(w)), @SETRI@)};
}
inline nn_vec nn_zero() { return {_mm256_setzero_@S@()}; }
inline nn_vec nn_splat(real a) { return {_mm256_set1_@S@(a)}; }
inline nn_vec nn_load(const real* p) { return {_mm256_loadu_@S@(p)}; }
inline nn_vec nn_load(const real* p, nn_mask m) { return {_mm256_maskload_@S@(p, m.v)}; }
inline void nn_store(real* p, nn_vec v) { _mm256_storeu_@S@(p, v.v); }
inline void nn_store(real* p, nn_vec v, nn_mask m) { _mm256_maskstore_@S@(p, m.v, v.v); }
inline nn_vec nn_fma(nn_vec a, nn_vec b, nn_vec c) { return {_mm256_fmadd_@S@(a.v, b.v, c.v)}; }
inline nn_vec nn_mul(nn_vec a, nn_vec b) { return {_mm256_mul_@S@(a.v, b.v)}; }
#else
constexpr std::size_t kTile = 16 / sizeof(real);
struct nn_vec { real x[kTile]; };
struct nn_mask { std::size_t w; };
inline nn_mask nn_mask_of(std::size_t w) { return {w}; }
inline nn_vec nn_zero() { return nn_vec{}; }
inline nn_vec nn_splat(real a) {
  nn_vec v;
  for (std::size_t j = 0; j < kTile; ++j) v.x[j] = a;
  return v;
}
inline nn_vec nn_load(const real* p) {
  nn_vec v;
  for (std::size_t j = 0; j < kTile; ++j) v.x[j] = p[j];
  return v;
}
inline nn_vec nn_load(const real* p, nn_mask m) {
  nn_vec v{};
  for (std::size_t j = 0; j < m.w; ++j) v.x[j] = p[j];
  return v;
}
inline void nn_store(real* p, nn_vec v) {
  for (std::size_t j = 0; j < kTile; ++j) p[j] = v.x[j];
}
inline void nn_store(real* p, nn_vec v, nn_mask m) {
  for (std::size_t j = 0; j < m.w; ++j) p[j] = v.x[j];
}
inline nn_vec nn_fma(nn_vec a, nn_vec b, nn_vec c) {
  for (std::size_t j = 0; j < kTile; ++j) c.x[j] += a.x[j] * b.x[j];
  return c;
}
inline nn_vec nn_mul(nn_vec a, nn_vec b) {
  for (std::size_t j = 0; j < kTile; ++j) a.x[j] *= b.x[j];
  return a;
}
#endif

)";
  std::string s = text;
  auto replace = [&](const std::string &from, const std::string &to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  };
  replace("@V@", f64 ? "__m512d" : "__m512");
  replace("@M@", f64 ? "__mmask8" : "__mmask16");
  replace("@P@", "_mm512");
  replace("@V2@", f64 ? "__m256d" : "__m256");
  replace("@CMP@", f64 ? "_mm256_cmpgt_epi64" : "_mm256_cmpgt_epi32");
  replace("@SET1I@", f64 ? "_mm256_set1_epi64x" : "_mm256_set1_epi32");
  replace("@IT@", f64 ? "long long" : "int");
  replace("@SETRI@", f64 ? "_mm256_setr_epi64x(0, 1, 2, 3)" : "_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)");
  replace("@S@", f64 ? "pd" : "ps");
  return s;
}

// The dot tiles' vector, nn_dvec: one register as the JIT's (one AVX-512 vector of kDot = 16
// floats, 4 rows of W a tile: 16 sums and 8 loads a step in 24 of the 32 zmm
// registers). Elsewhere it is nn_vec and a tile has 2 rows of W (AVX2's 16 ymm registers hold 8
// sums and 6 loads, not 16 and 8). Its partial sums are added across at the end of k (nn_dsum).
// Printed only where dot tiles are (an unused function is a warning).
// nn_keep: a value held in registers. g++ 12 otherwise folds a dot tile's loads into each of the
// multiply-adds that use them (16 loads a step instead of 8, load-bound); an empty asm statement
// that "changes" the register keeps it from re-reading memory. GNU C++ (g++, clang); elsewhere
// the value as it is.
std::string dotText(bool f64) {
  const char *text = R"(// Dot tiles: 4 examples by 4 (AVX-512: one zmm each) or 2 rows of W, an nn_dvec of partial sums
// across kDot values of k each.
#if defined(__AVX512F__)
constexpr std::size_t kDot = 64 / sizeof(real);
struct nn_dvec { @V@ v; };
using nn_dmask = @M@;
inline nn_dmask nn_dmask_of(std::size_t w) { return static_cast<@M@>((1u << w) - 1); }  // w < kDot
inline nn_dvec nn_dzero() { return {_mm512_setzero_@S@()}; }
inline nn_dvec nn_dload(const real* p) { return {_mm512_loadu_@S@(p)}; }
inline nn_dvec nn_dload(const real* p, nn_dmask m) { return {_mm512_maskz_loadu_@S@(m, p)}; }
inline nn_dvec nn_dfma(nn_dvec a, nn_dvec b, nn_dvec c) { return {_mm512_fmadd_@S@(a.v, b.v, c.v)}; }
#if defined(__GNUC__)
inline nn_dvec nn_keep(nn_dvec v) {
  __asm__("" : "+v"(v.v));
  return v;
}
#else
inline nn_dvec nn_keep(nn_dvec v) { return v; }
#endif
@SUM@
#else
constexpr std::size_t kDot = kTile;
using nn_dvec = nn_vec;
using nn_dmask = nn_mask;
inline nn_dmask nn_dmask_of(std::size_t w) { return nn_mask_of(w); }
inline nn_dvec nn_dzero() { return nn_zero(); }
inline nn_dvec nn_dload(const real* p) { return nn_load(p); }
inline nn_dvec nn_dload(const real* p, nn_dmask m) { return nn_load(p, m); }
inline nn_dvec nn_dfma(nn_dvec a, nn_dvec b, nn_dvec c) { return nn_fma(a, b, c); }
inline nn_dvec nn_keep(nn_dvec v) { return v; }
inline real nn_dsum(nn_dvec v) {  // across the lanes, pairwise
  real x[kDot];
  nn_store(x, v);
  for (std::size_t w = kDot / 2; w > 0; w /= 2)
    for (std::size_t j = 0; j < w; ++j) x[j] += x[j + w];
  return x[0];
}
#endif

)";
  std::string s = text;
  auto replace = [&](const std::string &from, const std::string &to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  };
  // The same pairwise order in shuffles (lane j + lane j + kDot/2, then + kDot/4, ...): a store
  // and a loop made g++ 12 sum through the stack. The shuffles are the zero-masking ones with
  // every lane set, all in 512 bits: g++ 12's unmasked shuffles, its 512-to-128-bit casts and
  // _mm512_reduce_add_ps warn of an uninitialized value under -Wall (their unused merge operand).
  replace("@SUM@", f64 ? R"(inline real nn_dsum(nn_dvec v) {  // across the lanes, pairwise
  __m512d t = _mm512_add_pd(v.v, _mm512_maskz_shuffle_f64x2(0xff, v.v, v.v, 0x4e));  // lane j + lane j + 4
  t = _mm512_add_pd(t, _mm512_maskz_shuffle_f64x2(0xff, t, t, 0xb1));                // + lane j + 2
  t = _mm512_add_pd(t, _mm512_maskz_permute_pd(0xff, t, 0x55));                       // + lane j + 1
  return _mm512_cvtsd_f64(t);
})"
                       : R"(inline real nn_dsum(nn_dvec v) {  // across the lanes, pairwise
  __m512 t = _mm512_add_ps(v.v, _mm512_maskz_shuffle_f32x4(0xffff, v.v, v.v, 0x4e));  // lane j + lane j + 8
  t = _mm512_add_ps(t, _mm512_maskz_shuffle_f32x4(0xffff, t, t, 0xb1));                // + lane j + 4
  t = _mm512_add_ps(t, _mm512_maskz_permute_ps(0xffff, t, 0x4e));                      // + lane j + 2
  t = _mm512_add_ps(t, _mm512_maskz_permute_ps(0xffff, t, 0xb1));                      // + lane j + 1
  return _mm512_cvtss_f32(t);
})");
  replace("@V@", f64 ? "__m512d" : "__m512");
  replace("@M@", f64 ? "__mmask8" : "__mmask16");
  replace("@S@", f64 ? "pd" : "ps");
  return s;
}

// --- the kernel printer ------------------------------------------------------------------------

const char *spaceArg(loops::Space s) {
  switch (s) {
  case loops::Space::Params: return "params";
  case loops::Space::Inputs: return "inputs";
  case loops::Space::Targets: return "targets";
  case loops::Space::Outputs: return "outputs";
  case loops::Space::Grads: return "grads";
  case loops::Space::Workspace: return "workspace";
  }
  return "?";
}

const char *spacePrefix(loops::Space s) {
  switch (s) {
  case loops::Space::Params: return "p_";
  case loops::Space::Inputs: return "in_";
  case loops::Space::Targets: return "tg_";
  case loops::Space::Outputs: return "out_";
  case loops::Space::Grads: return "g_";
  case loops::Space::Workspace: return "ws_";
  }
  return "?";
}

bool isWritable(loops::Space s) {
  return s == loops::Space::Outputs || s == loops::Space::Grads || s == loops::Space::Workspace;
}

// The start of buffer b: "workspace + 1 + 3 * n".
std::string bufferStart(const loops::Buffer &b) {
  std::string s = spaceArg(b.space);
  if (b.offset) s += fmt::format(" + {}", b.offset);
  if (b.offsetPerN) s += b.offsetPerN == 1 ? " + n" : fmt::format(" + {} * n", b.offsetPerN);
  return s;
}

// Minimum extent of an innermost reduction loop that is split into independent partial sums
// (so that compilers vectorize it without reassociating on their own), and the number of sums.
constexpr int64_t kLanesMinExtent = 32;


class KernelPrinter {
public:
  KernelPrinter(const Program &p, const loops::Program &l, Flags &f, std::array<bool, kHelpers> &h)
      : P(p), L(l), F(f), helpers_(h) {}

  // One kernel as a block: the comment, the buffers, the loop nest. The one dispatch on the kind.
  std::string print(const Kernel &k) {
    k_ = &k;
    out_.clear();
    names_.clear();
    vars_.clear();
    for (auto &l : k.loops) vars_[l.var] = l.batch ? "b" : fmt::format("i{}", l.var);
    comment(k);
    if (k.minBatch > 0 && k.maxBatch > 0) line(0, "if (n >= {} && n < {}) {{", k.minBatch, k.maxBatch);
    else if (k.minBatch > 0) line(0, "if (n >= {}) {{", k.minBatch);
    else if (k.maxBatch > 0) line(0, "if (n < {}) {{", k.maxBatch);
    else line(0, "{{");
    declareBuffers(k);
    switch (k.mode) {
    case Kernel::Assign: assign(k); break;
    case Kernel::Accumulate: accumulate(k); break;
    case Kernel::Reduce: reduce(k); break;
    case Kernel::Softmax: softmax(k); break;
    case Kernel::Gemm: gemm(k); break;
    }
    line(0, "}}");
    return out_;
  }

private:
  // --- kernel kinds ---------------------------------------------------------------------------
  // out[index] = body, over every loop.
  void assign(const Kernel &k) {
    // A copy that reads along another loop than the one it writes along (a weight matrix
    // transposed): the loop that reads contiguous elements innermost, so that compilers read
    // whole vectors (the writes, one a row, are combined in cache). Deep's 32 transposes of
    // 32 x 32: 7% of the emitted step with g++ (the JIT transposes in registers).
    const LExpr &body = k.pool[static_cast<size_t>(k.body)];
    if (body.kind == LExpr::Load && body.bounds.empty() && k.loops.size() >= 2 &&
        std::none_of(k.loops.begin(), k.loops.end(), [](const loops::Loop &l) { return l.batch; }) &&
        body.index.coef(k.loops.back().var) != 1) {
      auto reads = std::find_if(k.loops.begin(), k.loops.end(),
                                [&](const loops::Loop &l) { return body.index.coef(l.var) == 1; });
      if (reads != k.loops.end()) {
        Kernel reordered = k;
        auto at = reordered.loops.begin() + (reads - k.loops.begin());
        std::rotate(at, at + 1, reordered.loops.end());
        int d = openLoops(reordered, 0, reordered.loops.size(), 1);
        line(d, "{}[{}] = {};", name(k.out), affine(k.outIndex), expr(k.body));
        return;
      }
    }
    int d = openLoops(k, 0, k.loops.size(), 1);
    line(d, "{}[{}] = {};", name(k.out), affine(k.outIndex), expr(k.body));
  }

  // out[index] += body, over every loop.
  void accumulate(const Kernel &k) {
    int d = openLoops(k, 0, k.loops.size(), 1);
    if (!k.outBounds.empty()) line(d++, "if ({})", within(k.outBounds));
    line(d, "{}[{}] += {};", name(k.out), affine(k.outIndex), expr(k.body));
  }

  // out[index] = epilogue(Σ body): the trailing loops are the sum.
  void reduce(const Kernel &k) {
    if (k.dotTiles && k.combine == Kernel::Sum && k.loops.size() == 3 && k.loops[0].batch) return dotTiles(k);
    size_t all = k.loops.size(), outer = 0;
    while (outer < all && !k.loops[outer].reduction) ++outer;
    const bool block = outer > 0;
    int d = openLoops(k, 0, outer, 1, block);
    const loops::Loop &inner = k.loops.back();
    if (k.combine != Kernel::Sum) {
      // acc = v > acc ? v : acc (<, for min) from -inf (+inf): the first of equal values stays.
      F.limits = true;
      const bool mx = k.combine == Kernel::Max;
      line(d, "real acc = {}std::numeric_limits<real>::infinity();", mx ? "-" : "");
      const bool braces = all > outer;
      int e = openLoops(k, outer, all, d, braces);
      line(e, "const real v = {};", expr(k.body));
      line(e, "acc = v {} acc ? v : acc;", mx ? ">" : "<");
      if (braces) line(e - 1, "}}");
    } else if (all > outer && !inner.batch && inner.extent >= kLanesMinExtent) {
      // Independent partial sums over the innermost loop, added pairwise at the end.
      const int64_t lanes = F.f64 ? 8 : 16, main = inner.extent / lanes * lanes;
      const std::string v = vars_.at(inner.var), body = expr(k.body);
      line(d, "real lane[{}] = {{}};", lanes);
      const bool braces = all - 1 > outer; // outer reductions around the two loops below
      int e = openLoops(k, outer, all - 1, d, braces);
      line(e, "for (std::size_t {0}o = 0; {0}o < {1}; {0}o += {2})", v, main, lanes);
      line(e + 1, "for (std::size_t u = 0; u < {}; ++u) {{", lanes);
      line(e + 2, "const std::size_t {0} = {0}o + u;", v);
      line(e + 2, "lane[u] += {};", body);
      line(e + 1, "}}");
      if (main < inner.extent) {
        line(e, "for (std::size_t {0} = {1}; {0} < {2}; ++{0})", v, main, inner.extent);
        line(e + 1, "lane[{} - {}] += {};", v, main, body);
      }
      if (braces) line(e - 1, "}}");
      line(d, "for (std::size_t w = {}; w > 0; w /= 2)", lanes / 2);
      line(d + 1, "for (std::size_t u = 0; u < w; ++u) lane[u] += lane[u + w];");
      line(d, "const real acc = lane[0];");
    } else {
      line(d, "real acc = 0;");
      int e = openLoops(k, outer, all, d);
      line(e, "acc += {};", expr(k.body));
    }
    line(d, "{}[{}] = {};", name(k.out), affine(k.outIndex), expr(k.epilogue));
    if (block) line(d - 1, "}}");
  }

  // out[b, n] = epilogue(Σ_k A[b, k] W[n, k]), A and W contiguous along k (Kernel::dotTiles),
  // as the JIT tiles it: blocks of kDotCols rows of W (their panel stays in L1), in each blocks
  // of kDotRows examples and then the examples left one at a time, each tile's sums nn_dvec
  // partial sums over kDot values of k (the last step masked), added across (nn_dsum) and stored
  // through the epilogue. Neither operand is copied. The nest is printed twice behind #if: with
  // AVX-512 a tile is 4 x 4 single zmm vectors (the JIT's: 4 rows of 2 zmm each made g++ 12
  // load-bound, 1.36x the JIT's time on mnist); elsewhere 4 x 2 nn_vec (AVX2 has 16 registers).
  static constexpr int64_t kDotRows = 4, kDotColsWide = 4, kDotColsNarrow = 2;

  void dotTiles(const Kernel &k) {
    const loops::Loop &lm = k.loops[0], &ln = k.loops[1], &lk = k.loops[2];
    const LExpr &mul = k.pool[static_cast<size_t>(k.body)];
    int a = mul.a, w = mul.b;
    if (k.pool[static_cast<size_t>(a)].index.coef(ln.var) != 0) std::swap(a, w);
    const LExpr &la = k.pool[static_cast<size_t>(a)], &lw = k.pool[static_cast<size_t>(w)];
    if (mul.kind != LExpr::Binary || mul.op != Op::Mul || la.kind != LExpr::Load || lw.kind != LExpr::Load ||
        lk.batch || la.index.coef(lk.var) != 1 || lw.index.coef(lk.var) != 1 || la.index.coef(ln.var) != 0 ||
        lw.index.coef(lm.var) != 0)
      throw InternalError("C++ backend: dot tiles need A[m, k] W[n, k], both contiguous along k");
    usesTile_ = usesDotTiles_ = true;
    const std::string mv = vars_.at(lm.var), nv = vars_.at(ln.var);
    line(1, "// Register tiles of dot products: {} examples by 4 (AVX-512) or 2 rows of {} at a time, kDot values of {} a step.",
         kDotRows, commentText(L.buffers[static_cast<size_t>(lw.buffer)].name), vars_.at(lk.var));
    const int64_t N = ln.extent;
    auto rows = [&](int d, int64_t cols) {
      line(d, "std::size_t {} = 0;", mv);
      line(d, "for (; {0} + {1} <= n; {0} += {1}) {{", mv, kDotRows);
      dotTile(k, la, lw, kDotRows, cols, d + 1);
      line(d, "}}");
      line(d, "for (; {0} < n; ++{0}) {{", mv);
      dotTile(k, la, lw, 1, cols, d + 1);
      line(d, "}}");
    };
    auto nest = [&](int64_t C) {
      const int64_t blocks = N / C * C;
      if (blocks > 0) {
        line(1, "for (std::size_t {0} = 0; {0} < {1}; {0} += {2}) {{", nv, blocks, C);
        rows(2, C);
        line(1, "}}");
      }
      if (blocks < N) {
        line(1, "for (std::size_t {0} = {1}; {0} < {2}; ++{0}) {{", nv, blocks, N);
        rows(2, 1);
        line(1, "}}");
      }
    };
    out_ += "#if defined(__AVX512F__)\n";
    nest(kDotColsWide);
    out_ += "#else\n";
    nest(kDotColsNarrow);
    out_ += "#endif\n";
  }

  // One tile at `d`: R examples from the m loop's variable by C rows of W from the n loop's.
  void dotTile(const Kernel &k, const LExpr &la, const LExpr &lw, int64_t R, int64_t C, int d) {
    const loops::Loop &lm = k.loops[0], &ln = k.loops[1], &lk = k.loops[2];
    const std::string kv = vars_.at(lk.var);
    const int64_t am = la.index.coef(lm.var), wn = lw.index.coef(ln.var), K = lk.extent;
    line(d, "const real* ap = {} + ({});", name(la.buffer), affine(la.index.without(lk.var)));
    line(d, "const real* wp = {} + ({});", name(lw.buffer), affine(lw.index.without(lk.var)));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) line(d, "nn_dvec s{}{} = nn_dzero();", r, c);
    line(d, "std::size_t {} = 0;", kv);
    auto step = [&](int e, const std::string &m) {
      for (int64_t r = 0; r < R; ++r)
        line(e, "const nn_dvec a{} = nn_keep(nn_dload(ap + {}{}{}));", r, r ? std::to_string(r * am) + " + " : "", kv, m);
      for (int64_t c = 0; c < C; ++c)
        line(e, "const nn_dvec w{} = nn_keep(nn_dload(wp + {}{}{}));", c, c ? std::to_string(c * wn) + " + " : "", kv, m);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) line(e, "s{0}{1} = nn_dfma(a{0}, w{1}, s{0}{1});", r, c);
    };
    line(d, "for (; {0} + kDot <= {1}; {0} += kDot) {{", kv, K);
    step(d + 1, "");
    line(d, "}}");
    line(d, "if ({} < {}) {{", kv, K);
    line(d + 1, "const nn_dmask mask = nn_dmask_of({} - {});", K, kv);
    step(d + 1, ", mask");
    line(d, "}}");
    // Each sum added across its lanes, then stored through the epilogue.
    std::map<int, std::string> saved = vars_;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        vars_[lm.var] = r ? fmt::format("({} + {})", saved.at(lm.var), r) : saved.at(lm.var);
        vars_[ln.var] = c ? fmt::format("({} + {})", saved.at(ln.var), c) : saved.at(ln.var);
        line(d, "{{");
        line(d + 1, "const real acc = nn_dsum(s{}{});", r, c);
        line(d + 1, "{}[{}] = {};", name(k.out), affine(k.outIndex), expr(k.epilogue));
        line(d, "}}");
      }
    vars_ = std::move(saved);
  }

  // C[m, n] (+)= Σ_k A[m, k] B[k, n] over loops m, k, n, times 1/n with divideByBatch. Register
  // tiles as in the LLVM backend (see tileText): for each block of kTile columns (the last one
  // masked), for each chunk of kChunk values of k, blocks of 8 rows whose 8 nn_vec sums stay in
  // registers across the chunk, then the rows left one at a time. Each element's sum over k runs
  // in order, from C's value (`accumulate`, or a later chunk) or from 0, with fused multiply-adds
  // where the target has them: the JIT's numbers.
  static constexpr int64_t kRows = 8;

  void gemm(const Kernel &k) {
    // With four loops the first is the batch: one product an example (a convolution's).
    const size_t o = k.loops.size() == 4 && k.loops[0].batch ? 1 : 0;
    if (k.loops.size() != 3 + o || k.loops[o + 2].batch || (o && k.loops[o].batch))
      throw InternalError("C++ backend: a Gemm kernel needs loops [batch,] m, k, n");
    if (o) {
      line(1, "for (std::size_t {0} = 0; {0} < n; ++{0}) {{", vars_.at(k.loops[0].var));
      ++shift_;
    }
    gemmAt(k, o);
    if (o) {
      --shift_;
      line(1, "}}");
    }
  }

  void gemmAt(const Kernel &k, size_t o) {
    const loops::Loop &lm = k.loops[o], &lk = k.loops[o + 1], &ln = k.loops[o + 2];
    const LExpr &mul = k.pool[static_cast<size_t>(k.body)];
    if (mul.kind != LExpr::Binary || mul.op != Op::Mul) throw InternalError("C++ backend: a Gemm body is A * B");
    int a = mul.a, b = mul.b;
    auto hasVar = [](const loops::Affine &x, int v) {
      for (auto &t : x.terms)
        if (t.first == v) return true;
      return false;
    };
    if (hasVar(k.pool[static_cast<size_t>(a)].index, ln.var)) std::swap(a, b);
    for (int e : {a, b}) {
      const LExpr &l = k.pool[static_cast<size_t>(e)];
      if (l.kind != LExpr::Load || !l.bounds.empty()) throw InternalError("C++ backend: a Gemm operand is a plain load");
    }
    usesTile_ = true;
    if (!k.aRows.empty()) {
      // The windowed form: where A's rows and k steps start in the image, as two tables.
      const int t = tables_++;
      auto table = [&](const loops::Radix &r, const std::string &name) {
        std::string v;
        for (int64_t i = 0; i < r.size(); ++i) v += fmt::format("{}{}{}", i ? "," : "", i % 24 == 0 ? "\n" + std::string(static_cast<size_t>(2 * (3 + shift_)), ' ') : std::string(), r.at(i));
        line(1, "static const int {}[{}] = {{{}}};", name, r.size(), v);
      };
      windowRows_ = fmt::format("window_rows{}", t);
      windowKs_ = fmt::format("window_ks{}", t);
      table(k.aRows, windowRows_);
      table(k.aCols, windowKs_);
    }
    const std::string N = std::to_string(ln.extent), K = lk.batch ? "n" : std::to_string(lk.extent);
    const std::string mv = vars_.at(lm.var) + "0", nv = vars_.at(ln.var) + "0";
    line(1, "// Register tiles: {} rows by kTile columns of {} at a time, summed over {} in chunks{}.", kRows,
         commentText(L.buffers[static_cast<size_t>(k.out)].name), vars_.at(lk.var),
         k.divideByBatch ? ", then divided by n" : "");
    if (k.divideByBatch) line(1, "const real inv_n = real(1) / real(n);");
    line(1, "std::size_t {} = 0;", nv);
    for (bool masked : {false, true}) {
      if (!masked) line(1, "for (; {0} + kTile <= {1}; {0} += kTile) {{", nv, N);
      else {
        line(1, "if ({} < {}) {{", nv, N);
        line(2, "const nn_mask mask = nn_mask_of({} - {});", N, nv);
        if (k.epilogue >= 0) line(2, "const std::size_t mask_width = {} - {};", N, nv);
      }
      line(2, "std::size_t k0 = 0;");
      line(2, "do {{");
      line(3, "const std::size_t k1 = k0 + kChunk < {0} ? k0 + kChunk : {0};", K);
      if (!k.accumulate) line(3, "const bool first = k0 == 0;");
      // Rows: to n, or constant bounds where the row count is a constant (no loop that never
      // runs: g++ warns of undefined behaviour in one it cannot prove dead).
      const int64_t blocks = lm.batch ? 0 : lm.extent / kRows * kRows;
      if (lm.batch) {
        line(3, "std::size_t {} = 0;", mv);
        line(3, "for (; {0} + {1} <= n; {0} += {1}) {{", mv, kRows);
      } else if (blocks > 0) {
        line(3, "for (std::size_t {0} = 0; {0} < {1}; {0} += {2}) {{", mv, blocks, kRows);
      }
      if (lm.batch || blocks > 0) {
        gemmTile(k, o, a, b, kRows, masked, 4, mv, nv);
        line(3, "}}");
      }
      if (lm.batch) line(3, "for (; {0} < n; ++{0}) {{", mv);
      else if (blocks < lm.extent) line(3, "for (std::size_t {0} = {1}; {0} < {2}; ++{0}) {{", mv, blocks, lm.extent);
      if (lm.batch || blocks < lm.extent) {
        gemmTile(k, o, a, b, 1, masked, 4, mv, nv);
        line(3, "}}");
      }
      line(3, "k0 = k1;");
      line(2, "}} while (k0 < {});", K);
      line(1, "}}");
    }
  }

  // One tile at `depth`: R rows from row `m0`, kTile columns (the first lanes of `mask` when
  // `masked`) from column `n0`, over k0 <= k < k1. One nn_vec a row, the rows written out, each
  // operand through one pointer and constant offsets from it (one register for A's rows, not one a
  // row: g++ otherwise runs out of general registers and spills vectors).
  void gemmTile(const Kernel &k, size_t o, int a, int b, int64_t R, bool masked, int d, const std::string &m0,
                const std::string &n0) {
    const loops::Loop &lm = k.loops[o], &lk = k.loops[o + 1], &ln = k.loops[o + 2];
    std::map<int, std::string> saved = vars_;
    const std::string kv = vars_.at(lk.var), m = masked ? ", mask" : "";
    const LExpr &la = k.pool[static_cast<size_t>(a)], &lb = k.pool[static_cast<size_t>(b)];
    // "kv * 1024 + 3", "kv + 1", "2048": the offset of row r (or k step kv) from a pointer.
    auto offset = [](const std::string &var, int64_t coef, int64_t constant) {
      std::string s = coef == 0 ? "" : coef == 1 ? var : fmt::format("{} * {}", var, coef);
      if (s.empty()) return std::to_string(constant);
      if (constant > 0) s += fmt::format(" + {}", constant);
      else if (constant < 0) s += fmt::format(" - {}", -constant);
      return s;
    };
    vars_[ln.var] = n0;
    vars_[lm.var] = m0;
    const int64_t am = la.index.coef(lm.var), ak = la.index.coef(lk.var), bk = lb.index.coef(lk.var),
                  cm = k.outIndex.coef(lm.var);
    line(d, "const real* ap = {} + ({});", name(la.buffer), affine(la.index.without(lk.var)));
    line(d, "const real* bp = {} + ({});", name(lb.buffer), affine(lb.index.without(lk.var)));
    line(d, "real* cp = {} + ({});", name(k.out), affine(k.outIndex));
    for (int64_t r = 0; r < R; ++r) {
      const std::string c = r ? fmt::format("cp + {}", r * cm) : "cp";
      if (k.accumulate) line(d, "nn_vec c{} = nn_load({}{});", r, c, m);
      else line(d, "nn_vec c{} = first ? nn_zero() : nn_load({}{});", r, c, m);
    }
    const bool windowed = !k.aRows.empty();
    if (windowed)
      for (int64_t r = 0; r < R; ++r) line(d, "const int a{0} = {1}[{2} + {0}];", r, windowRows_, m0);
    line(d, "for (std::size_t {0} = k0; {0} < k1; ++{0}) {{", kv);
    line(d + 1, "const nn_vec x = nn_load(bp + {}{});", offset(kv, bk, 0), m);
    if (windowed) line(d + 1, "const int ak = {}[{}];", windowKs_, kv);
    for (int64_t r = 0; r < R; ++r) {
      if (windowed) line(d + 1, "c{0} = nn_fma(nn_splat(ap[a{0} + ak]), x, c{0});", r);
      else line(d + 1, "c{0} = nn_fma(nn_splat(ap[{1}]), x, c{0});", r, offset(kv, ak, r * am));
    }
    line(d, "}}");
    if (k.divideByBatch) line(d, "const nn_vec scale = nn_splat(k1 == {} ? inv_n : real(1));", lk.batch ? "n" : std::to_string(lk.extent));
    for (int64_t r = 0; r < R; ++r) {
      const std::string c = r ? fmt::format("cp + {}", r * cm) : "cp";
      line(d, "nn_store({}, {}{});", c, k.divideByBatch ? fmt::format("nn_mul(c{}, scale)", r) : fmt::format("c{}", r), m);
    }
    if (k.epilogue >= 0) {
      // After the last chunk, the tile (in L1) once more through the epilogue, a row at a time.
      line(d, "if (k1 == {}) {{", lk.batch ? "n" : std::to_string(lk.extent));
      // One loop over the rows (not the rows written out): the formula once, small enough that
      // compilers inline its helpers and vectorize along j.
      vars_[ln.var] = "(" + n0 + " + j)";
      vars_[lm.var] = R == 1 ? m0 : "(" + m0 + " + r)";
      if (R > 1) line(d + 1, "for (std::size_t r = 0; r < {}; ++r)", R);
      const int e = d + (R > 1 ? 2 : 1);
      line(e, "for (std::size_t j = 0; j < {}; ++j) {{", masked ? "mask_width" : "kTile");
      line(e + 1, "const real acc = {}[{}];", name(k.out), affine(k.outIndex));
      line(e + 1, "{}[{}] = {};", name(k.out), affine(k.outIndex), expr(k.epilogue));
      line(e, "}}");
      line(d, "}}");
    }
    vars_ = std::move(saved);
  }

  // Row-wise softmax (log_softmax) with the row maximum subtracted.
  void softmax(const Kernel &k) {
    const bool block = !k.loops.empty();
    int d = openLoops(k, 0, k.loops.size(), 1, block);
    line(d, "const real* row = {} + {};", name(k.in), affine(k.inIndex));
    line(d, "real* y = {} + {};", name(k.out), affine(k.outIndex));
    line(d, "real m = row[0];");
    line(d, "for (std::size_t c = 0; c < {}; ++c) m = row[c] > m ? row[c] : m;", k.cols);
    line(d, "real s = 0;");
    helpers_[HExp] = true;
    F.limits = true;
    line(d, "for (std::size_t c = 0; c < {}; ++c) s += nn_exp(row[c] - m);", k.cols);
    if (k.logSoftmax) {
      line(d, "const real log_s = std::log(s);");
      line(d, "for (std::size_t c = 0; c < {}; ++c) y[c] = row[c] - m - log_s;", k.cols);
    } else {
      line(d, "for (std::size_t c = 0; c < {}; ++c) y[c] = nn_exp(row[c] - m) / s;", k.cols);
    }
    if (block) line(d - 1, "}}");
  }

  // --- pieces ---------------------------------------------------------------------------------
  template <class... A> void line(int depth, fmt::format_string<A...> f, A &&...a) {
    out_ += std::string(static_cast<size_t>(2 * (depth + 1 + shift_)), ' ');
    out_ += fmt::format(f, std::forward<A>(a)...);
    out_ += '\n';
  }

  // Loops [from, to) of k at `depth`, the last one opening a brace with `brace`; returns the
  // depth of their body.
  int openLoops(const Kernel &k, size_t from, size_t to, int depth, bool brace = false) {
    for (size_t i = from; i < to; ++i) {
      const loops::Loop &l = k.loops[i];
      const std::string &v = vars_.at(l.var);
      const char *open = brace && i + 1 == to ? " {" : "";
      if (l.batch) line(depth, "for (std::size_t {0} = 0; {0} < n; ++{0}){1}", v, open);
      else line(depth, "for (std::size_t {0} = 0; {0} < {1}; ++{0}){2}", v, l.extent, open);
      ++depth;
    }
    return depth;
  }

  void comment(const Kernel &k) {
    std::string text = k.comment;
    // "y = y = logistic(...)": the value's name once.
    size_t eq = text.find(" = ");
    if (eq != std::string::npos) {
      std::string head = text.substr(0, eq + 3);
      std::string lhs = text.substr(0, eq);
      if (lhs.rfind("output ", 0) == 0) lhs = lhs.substr(7);
      if (text.compare(eq + 3, lhs.size() + 3, lhs + " = ") == 0) text = head + text.substr(eq + 3 + lhs.size() + 3);
    }
    out_ += "  // " + commentText(text) + "\n";
    if (uint32_t l = sourceLine(k.comment)) {
      std::string src = commentText(P.source.lineText(l));
      size_t first = src.find_first_not_of(' ');
      out_ += fmt::format("  //   {}:{}: {}\n", baseName(P.source.name), l,
                          first == std::string::npos ? "" : src.substr(first));
    }
  }

  static std::string baseName(const std::string &path) {
    size_t slash = path.find_last_of('/');
    return commentText(slash == std::string::npos ? path : path.substr(slash + 1));
  }

  // The .nn line a kernel comes from: "(line N)" in its comment, the param of a gradient, the
  // loss of the batch mean; 0 when none.
  uint32_t sourceLine(const std::string &c) const {
    size_t at = c.rfind("(line ");
    if (at != std::string::npos) return static_cast<uint32_t>(std::strtoul(c.c_str() + at + 6, nullptr, 10));
    if (P.loss) {
      if (c == "mean over the batch of " + P.loss->name) return P.loss->loc.line;
      std::string d = "d" + P.loss->name + "/d";
      if (c.rfind(d, 0) == 0) {
        size_t end = c.find(' ');
        std::string param = c.substr(d.size(), end == std::string::npos ? std::string::npos : end - d.size());
        if (const Decl *decl = P.findParam(param)) return decl->loc.line;
      }
    }
    return 0;
  }

  // Every buffer the kernel touches, as a __restrict pointer (written ones non-const). Within a
  // kernel no two buffers overlap: the workspace plan gives buffers that live at the same time
  // disjoint memory.
  void declareBuffers(const Kernel &k) {
    std::vector<int> order;
    auto use = [&](int b) {
      if (b >= 0 && std::find(order.begin(), order.end(), b) == order.end()) order.push_back(b);
    };
    use(k.out);
    use(k.in);
    for (const LExpr &e : k.pool)
      if (e.kind == LExpr::Load) use(e.buffer);
    std::set<std::string> taken;
    for (int b : order) {
      const loops::Buffer &buf = L.buffers[static_cast<size_t>(b)];
      std::string id = identifier(spacePrefix(buf.space), buf.name), base = id;
      for (int i = 2; taken.count(id); ++i) id = fmt::format("{}_{}", base, i);
      taken.insert(id);
      names_[b] = id;
      bool written = b == k.out && isWritable(buf.space);
      line(1, "{}real* __restrict {} = {};", written ? "" : "const ", id, bufferStart(buf));
    }
  }

  const std::string &name(int b) const { return names_.at(b); }

  std::string affine(const loops::Affine &a) const {
    std::string s;
    for (auto &[v, c] : a.terms) {
      const std::string &var = vars_.at(v);
      if (s.empty()) s = c == 1 ? var : c == -1 ? "0 - " + var : fmt::format("{} * {}", c, var);
      else if (c > 0) s += c == 1 ? " + " + var : fmt::format(" + {} * {}", c, var);
      else s += c == -1 ? " - " + var : fmt::format(" - {} * {}", -c, var);
    }
    if (s.empty()) return std::to_string(a.constant);
    if (a.constant > 0) s += fmt::format(" + {}", a.constant);
    else if (a.constant < 0) s += fmt::format(" - {}", -a.constant);
    return s;
  }

  // "i1 + 2 * i4 - 2 < 28 && ...": unsigned, so that a position before the start is large.
  std::string within(const std::vector<loops::Bound> &bounds) const {
    std::string s;
    for (const loops::Bound &b : bounds)
      s += fmt::format("{}std::size_t({}) < {}", s.empty() ? "" : " && ", affine(b.index), b.extent);
    return bounds.size() > 1 ? "(" + s + ")" : s;
  }

  std::string call(Helper h, const std::string &x) {
    helpers_[h] = true;
    if (h == HSoftplus) helpers_[HLog1p] = true;
    if (h == HExp || h == HLogistic || (h == HTanh && F.f64) || h == HSoftplus) {
      helpers_[HExp] = true;
      F.limits = true;
    }
    return fmt::format("{}({})", helperName(h), x);
  }

  std::string unary(Op op, const std::string &x, double p) {
    switch (op) {
    case Op::Neg: return "-" + x;
    case Op::Logistic: return call(HLogistic, x);
    case Op::Tanh: return call(HTanh, x);
    case Op::Relu: return call(HRelu, x);
    case Op::Softplus: return call(HSoftplus, x);
    case Op::Exp: return call(HExp, x);
    case Op::Log: return "std::log(" + x + ")";
    case Op::Sqrt: return "std::sqrt(" + x + ")";
    case Op::Abs: return "std::fabs(" + x + ")";
    case Op::Step: return call(HStep, x);
    case Op::Sign: return call(HSign, x);
    case Op::Gelu: return call(HGelu, x);
    case Op::Elu: return call(HElu, x);
    case Op::Erf: return "std::erf(" + x + ")";
    case Op::Sin: return "std::sin(" + x + ")";
    case Op::Cos: return "std::cos(" + x + ")";
    case Op::LeakyRelu: return call(HLeakyRelu, x + ", " + realLiteral(p, F));
    case Op::Pow:
      if (p == 2) return call(HSquare, x);
      if (p == 1) return x;
      if (p == -1) return "(real(1) / " + x + ")";
      if (p == 0.5) return "std::sqrt(" + x + ")";
      return "std::pow(" + x + ", " + realLiteral(p, F) + ")";
    default: break;
    }
    throw InternalError(fmt::format("C++ backend: '{}' is not a unary op", opSpelling(op)));
  }

  // An expression: a primary (a name, a call, a literal in parentheses when negative) or a
  // parenthesized operation.
  std::string expr(int e) {
    const LExpr &x = k_->pool[static_cast<size_t>(e)];
    switch (x.kind) {
    case LExpr::Const: return realLiteral(x.value, F);
    case LExpr::Load:
      if (!x.bounds.empty()) return fmt::format("({} ? {}[{}] : real(0))", within(x.bounds), name(x.buffer), affine(x.index));
      return fmt::format("{}[{}]", name(x.buffer), affine(x.index));
    case LExpr::Index: return fmt::format("real({})", affine(x.index));
    case LExpr::Select:
      return fmt::format("({} {} {} ? {} : {})", expr(x.a), x.cmp == LExpr::Ge ? ">=" : x.cmp == LExpr::Gt ? ">" : "==",
                         expr(x.b), expr(x.c), expr(x.d));
    case LExpr::Acc: return "acc";
    case LExpr::BatchSize: return "real(n)";
    case LExpr::Max:
      helpers_[HMax] = true;
      return fmt::format("{}({}, {})", helperName(HMax), expr(x.a), expr(x.b));
    case LExpr::Unary: {
      std::string a = expr(x.a);
      if (x.op == Op::Neg) return "(-" + a + ")";
      return unary(x.op, a, x.value);
    }
    case LExpr::Binary: {
      if (x.op == Op::Maximum || x.op == Op::Minimum || x.op == Op::GreaterEq)
        return call(x.op == Op::Maximum ? HMaximum : x.op == Op::Minimum ? HMinimum : HGe, expr(x.a) + ", " + expr(x.b));
      const char *o = x.op == Op::Add ? "+" : x.op == Op::Sub ? "-" : x.op == Op::Mul ? "*" : x.op == Op::Div ? "/" : nullptr;
      if (!o) break;
      return fmt::format("({} {} {})", expr(x.a), o, expr(x.b));
    }
    }
    throw InternalError("C++ backend: bad expression");
  }

  int shift_ = 0; // extra levels of indentation (inside a Gemm's batch loop)

public:
  bool usesTile_ = false; // a Gemm was printed: the source needs kTile
  int tables_ = 0;        // windowed Gemms' tables printed so far (their names)
  std::string windowRows_, windowKs_; // the current windowed Gemm's tables
  bool usesDotTiles_ = false; // dot tiles were printed: the source needs nn_sum too

private:
  const Program &P;
  const loops::Program &L;
  Flags &F;
  std::array<bool, kHelpers> &helpers_;
  const Kernel *k_ = nullptr;
  std::string out_;
  std::map<int, std::string> names_;
  std::map<int, std::string> vars_;
};

// --- the files -------------------------------------------------------------------------------

std::string shapeText(const Shape &s) { return s.isScalar() ? "scalar" : s.str(); }


class Emitter {
public:
  Emitter(const Program &p, const loops::Program &l, const CppEmitOptions &o) : P(p), L(l), O(o) {
    F.f64 = o.f64;
    helpers_.fill(false);
    name_ = o.name.empty() ? cppNameForPath(p.source.name) : o.name;
  }

  CppFiles run() {
    if (O.trainedParams && static_cast<int64_t>(O.trainedParams->size()) != P.paramCount())
      throw InternalError("emitCpp: trained params of the wrong size");
    CppFiles files;
    files.name = name_;
    std::string body = functions();
    files.source = source(body);
    files.header = header();
    if (O.withMain) files.main = mainFile();
    return files;
  }

private:
  // The source file's name without its directory: the emitted text does not depend on where
  // it was generated.
  std::string file() const {
    size_t slash = P.source.name.find_last_of('/');
    return commentText(slash == std::string::npos ? P.source.name : P.source.name.substr(slash + 1));
  }
  const char *dtype() const { return O.f64 ? "f64" : "f32"; }
  std::string realType() const { return O.f64 ? "double" : "float"; }

  struct Row {
    std::string offset, name, shape, extra;
  };
  // "//   0  W_i  [3, 4]  ~ normal(0, 0.5)   line 6", under a heading row.
  static std::string table(std::vector<Row> rows, const char *extra) {
    if (rows.empty()) return "//   (none)\n";
    rows.insert(rows.begin(), Row{"offset", "name", "shape", extra});
    size_t wName = 4, wShape = 6, wOff = 1;
    for (auto &r : rows) {
      wName = std::max(wName, r.name.size());
      wShape = std::max(wShape, r.shape.size());
      wOff = std::max(wOff, r.offset.size());
    }
    std::string out;
    for (auto &r : rows) {
      std::string text = fmt::format("//   {:>{}}  {:<{}}  {:<{}}  {}", r.offset, wOff, r.name, wName, r.shape, wShape, r.extra);
      while (!text.empty() && text.back() == ' ') text.pop_back();
      out += commentText(text) + "\n";
    }
    return out;
  }
  std::vector<Row> declRows(const std::vector<Decl> &ds, bool params) const {
    std::vector<Row> rows;
    for (const Decl &d : ds)
      rows.push_back({std::to_string(d.offset), d.name, shapeText(d.shape),
                      fmt::format("{}{}line {}", params ? describeInit(d) : "", params ? ", " : "", d.loc.line)});
    return rows;
  }

  std::string header() const {
    std::string h;
    h += fmt::format("// {}.hpp: generated by `nabla emit-cpp` from {} ({}). Do not edit: regenerate.\n", name_, file(), dtype());
    h += "// Standalone C++17: needs nothing but the standard library. Nothing here allocates, throws\n"
         "// or keeps state: calls on separate workspaces may run on several threads at once.\n";
    h += "//\n// The network:\n//\n";
    {
      std::string_view text = P.source.text;
      size_t lines = 0;
      for (size_t pos = 0; pos < text.size() && lines < 200; ++lines) {
        size_t end = std::min(text.find('\n', pos), text.size());
        std::string l = commentText(text.substr(pos, end - pos));
        h += l.empty() ? "//\n" : "//   " + l + "\n";
        pos = end + 1;
      }
      if (lines == 200) h += "//   ...\n";
    }
    h += "//\n// Layout: flat arrays of `real`, row-major; a batch is its examples one after another.\n";
    h += fmt::format("//\n// params: kParams = {} reals, shared by the batch; grads have the same layout.\n",
                     P.paramCount());
    h += table(declRows(P.params, true), "initialization, .nn line");
    h += fmt::format("//\n// inputs: kInputs = {} reals an example.\n", P.inputCount());
    h += table(declRows(P.inputs, false), ".nn line");
    h += fmt::format("//\n// targets: kTargets = {} reals an example (one-hot, never a class index).\n", P.targetCount());
    h += table(declRows(P.targets, false), ".nn line");
    h += fmt::format("//\n// outputs: kOutputs = {} reals an example.\n", P.outputCount());
    {
      std::vector<Row> rows;
      int64_t off = 0;
      for (auto &o : P.outputs) {
        Shape s = P.graph.shape(o.node);
        rows.push_back({std::to_string(off), o.name, shapeText(s), fmt::format("line {}", o.loc.line)});
        off += s.numel();
      }
      h += table(rows, ".nn line");
    }
    if (P.loss)
      h += fmt::format("//\n// loss: {}, a scalar an example (line {}); loss_and_gradient returns its mean over the batch.\n",
                       P.loss->name, P.loss->loc.line);
    else
      h += "//\n// The program has no loss: there is no loss_and_gradient.\n";
    h += "#pragma once\n\n#include <cstddef>\n\n";
    h += fmt::format("namespace {} {{\n\n", name_);
    h += fmt::format("using real = {};\n\n", realType());
    h += fmt::format("inline constexpr std::size_t kParams = {};  // scalars in the flat param array\n", P.paramCount());
    h += fmt::format("inline constexpr std::size_t kInputs = {};  // scalars of one example's inputs\n", P.inputCount());
    h += fmt::format("inline constexpr std::size_t kTargets = {};  // scalars of one example's targets\n", P.targetCount());
    h += fmt::format("inline constexpr std::size_t kOutputs = {};  // scalars of one example's outputs\n\n", P.outputCount());
    h += fmt::format("// Reals of scratch that forward and loss_and_gradient need for a batch of n: {} + {} * n.\n",
                     L.workspaceFixed, L.workspacePerExample);
    h += "std::size_t workspace_size(std::size_t n);\n\n";
    h += "// outputs[n * kOutputs]: the outputs of the n examples in inputs[n * kInputs].\n";
    h += "void forward(const real* params, const real* inputs, std::size_t n, real* outputs, real* workspace);\n";
    if (P.loss) {
      h += "\n// Returns the mean loss over the n examples; grads[kParams] = its gradient with respect to\n"
           "// params (overwritten, not accumulated).\n";
      h += "real loss_and_gradient(const real* params, const real* inputs, const real* targets, std::size_t n,\n"
           "                       real* grads, real* workspace);\n";
    }
    if (O.trainedParams) h += trainedParams();
    h += fmt::format("\n}}  // namespace {}\n", name_);
    return h;
  }

  std::string trainedParams() const {
    const std::vector<double> &v = *O.trainedParams;
    std::string h = "\n// The trained params (from the params file given to emit-cpp), in the layout above.\n";
    if (v.empty()) return h + "// (The program has no params.)\n";
    h += "inline constexpr real kTrainedParams[kParams] = {\n";
    for (const Decl &d : P.params) {
      h += fmt::format("    // {} {}, offset {}\n", commentText(d.name), shapeText(d.shape), d.offset);
      const int64_t count = d.shape.numel(), perLine = d.shape.rank() == 2 ? d.shape[1] : count;
      std::string l;
      for (int64_t i = 0; i < count; ++i) {
        double x = v[static_cast<size_t>(d.offset + i)];
        std::string t = O.f64 ? doubleText(x) : floatText(static_cast<float>(x));
        if (!std::isfinite(x)) t = "0.0"; // params files hold finite numbers only
        if (l.size() + t.size() + 2 > 96 || (i > 0 && i % perLine == 0)) {
          h += "    " + l + "\n";
          l.clear();
        }
        l += (l.empty() ? "" : " ") + t + ",";
      }
      if (!l.empty()) h += "    " + l + "\n";
    }
    h += "};\n";
    return h;
  }

  std::string functions() {
    std::string out;
    out += fmt::format("std::size_t workspace_size(std::size_t n) {{\n");
    if (L.workspacePerExample == 0) out += fmt::format("  (void)n;\n  return {};\n}}\n", L.workspaceFixed);
    else out += fmt::format("  return {} + {} * n;\n}}\n", L.workspaceFixed, L.workspacePerExample);
    out += "\n" + function(L.forward, false);
    if (P.loss && !L.gradient.name.empty()) out += "\n" + function(L.gradient, true);
    return out;
  }

  // Work of one example below which a function is also printed for n = 1 as a constant (as the JIT
  // gives small programs a one-example body): the scalar iterations of its kernels, per example.
  static constexpr int64_t kOneExampleWork = 4096;

  static int64_t workPerExample(const loops::Function &f) {
    int64_t w = 0;
    for (const Kernel &k : f.kernels) {
      int64_t it = 1;
      for (const loops::Loop &l : k.loops)
        if (!l.batch) it = std::min<int64_t>(it * std::max<int64_t>(l.extent, 1), kOneExampleWork + 1);
      w = std::min<int64_t>(w + it, kOneExampleWork + 1);
    }
    return w;
  }

  std::string function(const loops::Function &f, bool gradient) {
    std::string out;
  // Arguments that no kernel uses.
    std::set<std::string> used;
    bool usesN = false;
    for (const Kernel &k : f.kernels) {
      auto note = [&](int b) {
        if (b < 0) return;
        const loops::Buffer &buf = L.buffers[static_cast<size_t>(b)];
        used.insert(spaceArg(buf.space));
        usesN |= buf.offsetPerN != 0;
      };
      note(k.out);
      note(k.in);
      for (const LExpr &e : k.pool) {
        if (e.kind == LExpr::Load) note(e.buffer);
        usesN |= e.kind == LExpr::BatchSize;
      }
      for (auto &l : k.loops) usesN |= l.batch;
    }
    if (f.result >= 0) {
      used.insert("workspace");
      usesN |= L.buffers[static_cast<size_t>(f.result)].offsetPerN != 0;
    }
    if (usesN) used.insert("n");
    std::vector<std::string> args = gradient ? std::vector<std::string>{"params", "inputs", "targets", "n", "grads", "workspace"}
                                             : std::vector<std::string>{"params", "inputs", "n", "outputs", "workspace"};
    std::string unused;
    for (auto &a : args)
      if (!used.count(a)) unused += fmt::format("  (void){};\n", a);
    if (!unused.empty()) out += unused + (f.kernels.empty() ? "" : "\n");
    KernelPrinter kp(P, L, F, helpers_);
    for (size_t i = 0; i < f.kernels.size(); ++i) out += (i ? "\n" : "") + kp.print(f.kernels[i]);
    usesTile_ |= kp.usesTile_;
    usesDotTiles_ |= kp.usesDotTiles_;
    if (gradient) {
      if (f.result < 0) throw InternalError("C++ backend: the gradient function returns no loss");
      const loops::Buffer &r = L.buffers[static_cast<size_t>(f.result)];
      std::string at = std::to_string(r.offset);
      if (r.offsetPerN) at += r.offsetPerN == 1 ? " + n" : fmt::format(" + {} * n", r.offsetPerN);
      out += fmt::format("  return workspace[{}];\n", at);
    }
    out += "}\n";
    const std::string name = gradient ? "loss_and_gradient" : "forward";
    const std::string type = gradient ? "real " : "void ";
    // The parameter list, its second line under the first parameter of `head(`.
    auto params = [&](const std::string &head) {
      return gradient ? "(const real* params, const real* inputs, const real* targets, std::size_t n,\n" +
                            std::string(head.size() + 1, ' ') + "real* grads, real* workspace)"
                      : std::string("(const real* params, const real* inputs, std::size_t n, real* outputs, real* workspace)");
    };
    if (!usesN || workPerExample(f) > kOneExampleWork) return type + name + params(type + name) + " {\n" + out;
    // A small program called with one example (a controller's step, a lecture's example): the body
    // is also compiled for n = 1 as a constant, so that compilers fold the batch loops and the
    // forms for n >= 8 away and unroll what is left (the JIT's one-example body).
    const std::string callArgs = gradient ? "params, inputs, targets, N, grads, workspace" : "params, inputs, N, outputs, workspace";
    auto call = [&](const char *n) {
      std::string a = callArgs;
      a.replace(a.find('N'), 1, n);
      return (gradient ? "return " : "") + name + "_body(" + a + ");\n";
    };
    const std::string body = "static inline " + type + name + "_body";
    return "#if defined(__GNUC__)\n__attribute__((always_inline))\n#endif\n" + body + params(body) + " {\n" + out + "\n" +
           type + name + params(type + name) + " {\n  if (n == 1) {\n    " + call("1") +
           (gradient ? "" : "    return;\n") + "  }\n  " + call("n") + "}\n";
  }

  std::string source(const std::string &body) {
    std::string s;
    s += fmt::format("// {}.cpp: generated by `nabla emit-cpp` from {} ({}). Do not edit: regenerate.\n", name_, file(), dtype());
    s += "// Each block is one kernel of the Loop IR: the formula it computes, the .nn line it comes\n"
         "// from, its buffers and its loop nest. Only the batch loop runs to n; every other trip count\n"
         "// is a constant, so compilers unroll and vectorize freely.\n";
    s += fmt::format("#include \"{}.hpp\"\n\n#include <cmath>\n#include <cstddef>\n", name_);
    if (helpers_[HExp]) s += "#include <cstdint>\n#include <cstring>\n";
    if (F.limits) s += "#include <limits>\n";
    if (usesTile_)
      s += "#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))\n#include <immintrin.h>  // the tiles' intrinsics\n#endif\n";
    s += fmt::format("\nnamespace {} {{\n\n", name_);
    bool any = std::find(helpers_.begin(), helpers_.end(), true) != helpers_.end();
    if (any || usesTile_) {
      s += "namespace {\n\n";
      if (usesTile_) s += tileText(F.f64);
      if (usesDotTiles_) s += dotText(F.f64);
      for (int h = 0; h < kHelpers; ++h)
        if (helpers_[static_cast<size_t>(h)])
          s += (h == HExp               ? expText(F.f64)
                : h == HTanh && !F.f64 ? std::string(kTanhF32)
                                       : helperText(static_cast<Helper>(h))) +
               "\n";
      s += "}  // namespace\n\n";
    }
    s += body;
    s += fmt::format("\n}}  // namespace {}\n", name_);
    return s;
  }

  std::string mainFile() const;

  const Program &P;
  const loops::Program &L;
  const CppEmitOptions &O;
  Flags F;
  std::array<bool, kHelpers> helpers_;
  bool usesTile_ = false, usesDotTiles_ = false;
  std::string name_;
};

// --- NAME_main.cpp -----------------------------------------------------------------------------

// The program's text with @NAME@ and the tables substituted. The generator is runtime/Random.h's
// algorithm, exactly; the CSV rules are LANGUAGE.md's (plain rows or one class-index column).
const char *kMainTemplate = R"CPP(// @NAME@_main.cpp: generated by `nabla emit-cpp --main` from @FILE@ (@DTYPE@). A complete program
// that trains the network of @NAME@.hpp on a CSV file with SGD and prints the loss an epoch:
//
//   g++ -std=c++17 -O2 @NAME@.cpp @NAME@_main.cpp -o @NAME@_train
//   ./@NAME@_train DATA.csv [--epochs 10] [--batch 32] [--lr 0.1] [--seed 0] [--save P.json]
//   ./@NAME@_train --dump-init [--seed 0]     prints the initial params, one a line (%.17g)
//
// Initial params come from the seed with nabla's own generator, bit for bit the params that
// `nabla train --seed S` starts from@TRAINED_NOTE@. Examples are shuffled every epoch (seeded).
// --save writes the params in nabla's JSON format (for `nabla predict --params`).
//
// CSV: one example a row, the inputs flattened row-major in declaration order, then the targets
// likewise@CLASS_NOTE@. A first line with a field that is not a number is a header.
//
// IDX (MNIST's format, as `nabla train --data IMAGES --labels LABELS` reads it): DATA is an
// idx3-ubyte file of images, the one input's pixels (0..255); --labels an idx1-ubyte file of
// class indices. Raw files only: this program links no zlib (gzip -dk FILE.gz first).
#include "@NAME@.hpp"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace {

using @NAME@::real;

// --- the seeded generator: SplitMix64-seeded xoshiro256**, uniform and polar-method normal draws
// (nabla's runtime/Random.h, exactly; std::fma is written out so that no flag changes a result).
class Rng {
public:
  explicit Rng(std::uint64_t seed) {
    for (std::uint64_t &s : s_) s = splitMix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return std::fma(hi - lo, uniform(), lo); }
  double normal(double mean, double std) {
    double z;
    if (hasCached_) {
      z = cached_;
      hasCached_ = false;
    } else {
      double u, v, s;
      do {
        u = uniform(-1.0, 1.0);
        v = uniform(-1.0, 1.0);
        s = std::fma(u, u, v * v);
      } while (!(s > 0.0 && s < 1.0));
      const double f = std::sqrt(-2.0 * std::log(s) / s);
      cached_ = v * f;
      hasCached_ = true;
      z = u * f;
    }
    return std::fma(std, z, mean);
  }

private:
  static std::uint64_t splitMix64(std::uint64_t &x) {
    x += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  static std::uint64_t rotl(std::uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }
  std::uint64_t s_[4];
  double cached_ = 0;
  bool hasCached_ = false;
};

// --- the params in declaration order: name, place, shape, initialization
enum Init { kConstant, kNormal, kUniform, kGlorot };
struct Param {
  const char* name;  // null ends the table
  std::size_t offset, rank, rows, cols;  // a vector is 1 x cols, a scalar 1 x 1, rank 3 and 4 (rows of the last dim) x last
  Init init;
  double a, b;
  std::size_t dims[4];  // the shape (rank entries)
};
const Param kParamTable[] = {
@PARAM_TABLE@    {nullptr, 0, 0, 0, 0, kConstant, 0, 0, {0, 0, 0, 0}},
};

// Initial params for `seed`: one generator stream over the params in order, each row-major.
std::vector<double> initialParams(std::uint64_t seed, std::size_t count) {
  std::vector<double> flat(count, 0.0);
  Rng rng(seed);
  for (const Param* p = kParamTable; p->name; ++p) {
    double* out = flat.data() + p->offset;
    const std::size_t n = p->rows * p->cols;
    switch (p->init) {
    case kConstant:
      for (std::size_t i = 0; i < n; ++i) out[i] = p->a;
      break;
    case kNormal:
      for (std::size_t i = 0; i < n; ++i) out[i] = rng.normal(p->a, p->b);
      break;
    case kUniform:
      for (std::size_t i = 0; i < n; ++i) out[i] = rng.uniform(p->a, p->b);
      break;
    case kGlorot: {
      const double limit = std::sqrt(6.0 / static_cast<double>(p->rows + p->cols));
      for (std::size_t i = 0; i < n; ++i) out[i] = rng.uniform(-limit, limit);
      break;
    }
    }
  }
  return flat;
}

// --- CSV ------------------------------------------------------------------------------------
struct Data {
  std::size_t rows = 0;
  std::vector<real> inputs, targets;
};

bool isBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

// number ::= [+-]? digit+ ('.' digit+)? ([eE] [+-]? digit+)?   Returns an error text, or "".
std::string scanNumber(const std::string& f, double& out) {
  std::size_t i = 0;
  const std::size_t n = f.size();
  if (n == 0) return "is empty";
  if (f[i] == '+' || f[i] == '-') ++i;
  if (i == n || !isDigit(f[i])) return "is not a number";
  while (i < n && isDigit(f[i])) ++i;
  if (i < n && f[i] == '.') {
    if (++i == n || !isDigit(f[i])) return "is not a number: a '.' must be followed by digits";
    while (i < n && isDigit(f[i])) ++i;
  }
  if (i < n && (f[i] == 'e' || f[i] == 'E')) {
    ++i;
    if (i < n && (f[i] == '+' || f[i] == '-')) ++i;
    if (i == n || !isDigit(f[i])) return "is not a number: an exponent must be followed by digits";
    while (i < n && isDigit(f[i])) ++i;
  }
  if (i != n) return "is not a number";
  errno = 0;
  out = std::strtod(f.c_str(), nullptr);
  if (std::isinf(out)) return "is out of the double range";
  return "";
}

// Reads `path`: rows of nIn + nT numbers, or of nIn numbers and one class index 0..classes-1
// (classes > 1: the program has one target [classes]), one-hot encoded. Errors: FILE:LINE: error.
bool readCsv(const char* path, std::size_t nIn, std::size_t nT, std::size_t classes, Data& data) {
  std::FILE* file = std::fopen(path, "rb");
  if (!file) {
    std::fprintf(stderr, "%s: error: cannot open: %s\n", path, std::strerror(errno));
    return false;
  }
  std::string text;
  char buf[65536];
  for (std::size_t got; (got = std::fread(buf, 1, sizeof buf, file)) > 0;) text.append(buf, got);
  const bool readError = std::ferror(file) != 0;
  std::fclose(file);
  if (readError) {
    std::fprintf(stderr, "%s: error: cannot read\n", path);
    return false;
  }
  std::size_t pos = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0, lineNo = 0, width = 0, headerLine = 0;
  bool first = true;
  std::vector<std::string> fields;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineNo;
    fields.clear();
    bool blank = true;
    for (std::size_t start = 0;;) {
      std::size_t comma = line.find(',', start);
      if (comma == std::string::npos) comma = line.size();
      std::size_t a = start, b = comma;
      while (a < b && isBlank(line[a])) ++a;
      while (b > a && isBlank(line[b - 1])) --b;
      fields.push_back(line.substr(a, b - a));
      blank = blank && a == b && comma == line.size() && fields.size() == 1;
      if (comma == line.size()) break;
      start = comma + 1;
    }
    if (blank) continue;
    double v = 0;
    if (first) {  // a header has a field that is neither empty nor a number
      first = false;
      bool header = false;
      for (const std::string& f : fields)
        if (!f.empty() && !scanNumber(f, v).empty()) header = true;
      if (header) {
        headerLine = lineNo;
        continue;
      }
    }
    const std::size_t count = fields.size();
    if (width == 0) {
      if (count == nIn + nT) width = count;
      else if (classes > 1 && count == nIn + 1) width = count;
      else {
        std::fprintf(stderr, "%s:%zu: error: row has %zu fields; expected %zu", path, lineNo, count, nIn + nT);
        if (classes > 1) std::fprintf(stderr, " or %zu (the inputs, then a class index 0..%zu)", nIn + 1, classes - 1);
        std::fprintf(stderr, "\n");
        return false;
      }
    } else if (count != width) {
      std::fprintf(stderr, "%s:%zu: error: row has %zu fields; expected %zu like the first row\n", path, lineNo,
                   count, width);
      return false;
    }
    for (std::size_t c = 0; c < count; ++c) {
      const std::string why = scanNumber(fields[c], v);
      if (!why.empty()) {
        std::fprintf(stderr, "%s:%zu: error: column %zu: \"%.40s\" %s\n", path, lineNo, c + 1, fields[c].c_str(),
                     why.c_str());
        return false;
      }
      if (c < nIn) {
        data.inputs.push_back(static_cast<real>(v));
      } else if (width == nIn + nT) {
        data.targets.push_back(static_cast<real>(v));
      } else {
        if (!(v >= 0 && v < static_cast<double>(classes) && v == std::floor(v))) {
          std::fprintf(stderr, "%s:%zu: error: column %zu: class index \"%s\" is not an integer in 0..%zu\n", path,
                       lineNo, c + 1, fields[c].c_str(), classes - 1);
          return false;
        }
        for (std::size_t k = 0; k < classes; ++k) data.targets.push_back(k == static_cast<std::size_t>(v) ? 1 : 0);
      }
    }
    ++data.rows;
  }
  if (data.rows == 0) {
    std::fprintf(stderr, "%s:%zu: error: no examples: the file %s\n", path, headerLine ? headerLine : 1,
                 headerLine ? "has only a header line" : text.empty() ? "is empty" : "has only blank lines");
    return false;
  }
  return true;
}

// --- IDX --------------------------------------------------------------------------------------
bool readAll(const char* path, std::string& text) {
  std::FILE* file = std::fopen(path, "rb");
  if (!file) {
    std::fprintf(stderr, "%s: error: cannot open: %s\n", path, std::strerror(errno));
    return false;
  }
  char buf[65536];
  for (std::size_t got; (got = std::fread(buf, 1, sizeof buf, file)) > 0;) text.append(buf, got);
  const bool readError = std::ferror(file) != 0;
  std::fclose(file);
  if (readError) std::fprintf(stderr, "%s: error: cannot read\n", path);
  return !readError;
}

// Whether the file at `path` starts as an IDX file of unsigned bytes (00 00 08) or as gzip data.
bool looksLikeIdx(const char* path) {
  std::FILE* file = std::fopen(path, "rb");
  if (!file) return false;
  unsigned char b[3] = {1, 1, 1};
  const std::size_t got = std::fread(b, 1, 3, file);
  std::fclose(file);
  return (got >= 2 && b[0] == 0x1f && b[1] == 0x8b) || (got == 3 && b[0] == 0 && b[1] == 0 && b[2] == 0x08);
}

std::uint32_t bigEndian32(const std::string& b, std::size_t at) {
  auto u = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(b[at + i])); };
  return u(0) << 24 | u(1) << 16 | u(2) << 8 | u(3);
}

// The magic number (00 00 08 DIMS) and the whole header of an IDX file of `kind`.
bool idxHeader(const char* path, const std::string& b, unsigned dims, const char* kind) {
  if (b.size() >= 2 && static_cast<unsigned char>(b[0]) == 0x1f && static_cast<unsigned char>(b[1]) == 0x8b) {
    std::fprintf(stderr, "%s: error: the file is gzip-compressed; this program reads raw IDX files (gzip -dk %s)\n",
                 path, path);
    return false;
  }
  if (b.size() < 4) {
    std::fprintf(stderr, "%s: error: at byte %zu: the file ends inside the magic number; an %s file starts with 00 00 08 %02x\n",
                 path, b.size(), kind, dims);
    return false;
  }
  if (b[0] != 0 || b[1] != 0 || static_cast<unsigned char>(b[2]) != 0x08 || static_cast<unsigned char>(b[3]) != dims) {
    std::fprintf(stderr, "%s: error: at byte 0: wrong magic number %02x %02x %02x %02x; expected 00 00 08 %02x (%s)\n", path,
                 static_cast<unsigned char>(b[0]), static_cast<unsigned char>(b[1]), static_cast<unsigned char>(b[2]),
                 static_cast<unsigned char>(b[3]), dims, kind);
    return false;
  }
  if (b.size() < 4 + 4 * std::size_t(dims)) {
    std::fprintf(stderr, "%s: error: at byte %zu: the file ends inside the %zu-byte header of %s\n", path, b.size(),
                 4 + 4 * std::size_t(dims), kind);
    return false;
  }
  return true;
}

// Images (the one input: nIn pixels each) and, with `labels`, their class indices 0..classes-1
// one-hot encoded as the target. Errors: FILE: error: at byte N: ...
bool readIdx(const char* images, const char* labels, std::size_t nIn, std::size_t nT, std::size_t classes, Data& data) {
  std::string b;
  if (!readAll(images, b) || !idxHeader(images, b, 3, "idx3-ubyte images")) return false;
  const std::uint64_t count = bigEndian32(b, 4), rows = bigEndian32(b, 8), cols = bigEndian32(b, 12);
  if (count == 0 || rows == 0 || cols == 0) {
    std::fprintf(stderr, "%s: error: at byte %d: the file holds no pixels (%llu images of %llu x %llu)\n", images,
                 count == 0 ? 4 : rows == 0 ? 8 : 12, static_cast<unsigned long long>(count),
                 static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols));
    return false;
  }
  if (rows * cols != nIn) {
    std::fprintf(stderr, "%s: error: at byte 8: the images are %llu x %llu = %llu pixels; the input has %zu elements\n",
                 images, static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols),
                 static_cast<unsigned long long>(rows * cols), nIn);
    return false;
  }
  const std::uint64_t have = b.size() - 16, need = count * nIn;  // count < 2^32, nIn < 2^32: no overflow
  if (have != need) {
    if (have < need)
      std::fprintf(stderr, "%s: error: at byte %zu: the file ends in image %llu of %llu\n", images, b.size(),
                   static_cast<unsigned long long>(have / nIn + 1), static_cast<unsigned long long>(count));
    else
      std::fprintf(stderr, "%s: error: at byte %llu: %llu bytes after the last of the %llu images\n", images,
                   static_cast<unsigned long long>(need + 16), static_cast<unsigned long long>(have - need),
                   static_cast<unsigned long long>(count));
    return false;
  }
  if (!labels && nT > 0) {
    std::fprintf(stderr, "%s: error: the program has a target: give the images' labels with --labels FILE\n", images);
    return false;
  }
  std::string l;
  if (labels) {
    if (classes < 2) {
      std::fprintf(stderr, "%s: error: --labels gives a class index for one target [K] with K > 1; the program has none\n",
                   labels);
      return false;
    }
    if (!readAll(labels, l) || !idxHeader(labels, l, 1, "idx1-ubyte labels")) return false;
    const std::uint64_t n = bigEndian32(l, 4);
    if (n != count) {
      std::fprintf(stderr, "%s: error: at byte 4: %llu labels for the %llu images of %s\n", labels,
                   static_cast<unsigned long long>(n), static_cast<unsigned long long>(count), images);
      return false;
    }
    if (l.size() - 8 != n) {
      std::fprintf(stderr, "%s: error: at byte %zu: the file %s its %llu labels\n", labels, l.size() - 8 < n ? l.size() : 8 + n,
                   l.size() - 8 < n ? "ends before the last of" : "has bytes after the last of", static_cast<unsigned long long>(n));
      return false;
    }
    for (std::uint64_t i = 0; i < n; ++i)
      if (static_cast<unsigned char>(l[8 + i]) >= classes) {
        std::fprintf(stderr, "%s: error: at byte %llu: label %u of image %llu is not a class index 0..%zu\n", labels,
                     static_cast<unsigned long long>(8 + i), static_cast<unsigned>(static_cast<unsigned char>(l[8 + i])),
                     static_cast<unsigned long long>(i), classes - 1);
        return false;
      }
  }
  data.rows = static_cast<std::size_t>(count);
  data.inputs.resize(static_cast<std::size_t>(need));
  for (std::size_t i = 0; i < data.inputs.size(); ++i) data.inputs[i] = static_cast<real>(static_cast<unsigned char>(b[16 + i]));
  data.targets.assign(data.rows * nT, real(0));
  for (std::size_t i = 0; labels && i < data.rows; ++i) data.targets[i * nT + static_cast<unsigned char>(l[8 + i])] = 1;
  return true;
}

// --- Files, written as nabla writes them: into a new temporary file beside PATH, created
// exclusively (a file or symbolic link planted at its name is never followed or clobbered; each
// run has its own), synced, then renamed over PATH, so PATH is the old file or the new one, never
// a part. A symbolic link PATH keeps pointing where it did (its target is replaced); a device, a
// FIFO or a socket (/dev/stdout, a pipe) is written in place, never replaced by a regular file; a
// FIFO that no process reads is an error (ENXIO), not a wait. On failure errno says why.
#if defined(__unix__) || defined(__APPLE__)
bool writeAllTo(int fd, const std::string& s) {
  for (std::size_t done = 0; done < s.size();) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool writeFileSafely(const char* requested, const std::string& contents) {
  std::string path = requested;
  struct stat st = {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    if (char* real = ::realpath(path.c_str(), nullptr)) {
      path = real;
      std::free(real);
    }
  }
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    return false;
  }
  if (exists && !S_ISREG(st.st_mode)) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    bool ok = writeAllTo(fd, contents);
    const int e = errno;
    if (::close(fd) != 0 && ok) return false;
    errno = e;
    return ok;
  }
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." + std::to_string(attempt);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) return false;
  }
  if (fd < 0) return false;
  bool ok = (!exists || ::fchmod(fd, st.st_mode & 07777) == 0) && writeAllTo(fd, contents) && ::fsync(fd) == 0;
  int e = errno;
  if (::close(fd) != 0 && ok) ok = false, e = errno;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, e = errno;
  if (!ok) {
    ::unlink(tmp.c_str());
    errno = e;
  }
  return ok;
}
#else
bool writeFileSafely(const char* path, const std::string& contents) {  // no POSIX: PATH.tmp, renamed
  const std::string tmp = std::string(path) + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  bool ok = f && std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  if (f) ok = std::fclose(f) == 0 && ok;
  if (ok) ok = std::rename(tmp.c_str(), path) == 0;
  if (!ok) {
    const int e = errno;
    std::remove(tmp.c_str());
    errno = e;
  }
  return ok;
}
#endif

// --- JSON params (nabla's format), written by writeFileSafely
void number(std::string& out, real v) {
  char num[64];
  std::snprintf(num, sizeof num, "%.*g", sizeof(real) == 4 ? 9 : 17, static_cast<double>(v));
  out += std::isfinite(v) ? num : "null";
}

// v as nested arrays of shape dims[0..rank), on one line.
void nested(std::string& out, const real* v, const std::size_t* dims, std::size_t rank) {
  std::size_t inner = 1;
  for (std::size_t d = 1; d < rank; ++d) inner *= dims[d];
  out += "[";
  for (std::size_t i = 0; i < dims[0]; ++i) {
    if (i) out += ", ";
    if (rank == 1) number(out, v[i]);
    else nested(out, v + i * inner, dims + 1, rank - 1);
  }
  out += "]";
}

bool saveParams(const char* path, const std::vector<real>& params) {
  std::string out = "{";
  bool firstParam = true;
  for (const Param* p = kParamTable; p->name; ++p) {
    out += firstParam ? "\n  \"" : ",\n  \"";
    firstParam = false;
    out += p->name;
    out += "\": ";
    const real* v = params.data() + p->offset;
    if (p->rank == 0) {
      number(out, v[0]);
      continue;
    }
    if (p->rank == 1) {
      nested(out, v, p->dims, 1);
      continue;
    }
    // A matrix or more: a line for each index of the first axis.
    const std::size_t row = p->rows * p->cols / p->dims[0];
    out += "[";
    for (std::size_t r = 0; r < p->dims[0]; ++r) {
      out += r ? ",\n    " : "\n    ";
      nested(out, v + r * row, p->dims + 1, p->rank - 1);
    }
    out += "\n  ]";
  }
  out += "\n}\n";
  if (!writeFileSafely(path, out)) {
    std::fprintf(stderr, "%s: error: cannot write: %s\n", path, std::strerror(errno));
    return false;
  }
  return true;
}

int usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s DATA.csv [--epochs E] [--batch B] [--lr R] [--seed S] [--save P.json]\n"
               "       %s IMAGES.idx3-ubyte --labels LABELS.idx1-ubyte [options as above]\n"
               "       %s --dump-init [--seed S]\n",
               program, program, program);
  return 1;
}

bool parseCount(const char* text, unsigned long long& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(text, &end, 10);
  return *text >= '0' && *text <= '9' && end && *end == 0 && errno == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* data = nullptr;
  const char* save = nullptr;
  const char* labels = nullptr;
  unsigned long long epochs = 10, batch = 32, seed = 0;
  double lr = 0.1;
  bool dumpInit = false, seedGiven = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool hasValue = i + 1 < argc;
    if (a == "--dump-init") {
      dumpInit = true;
    } else if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if ((a == "--epochs" || a == "--batch" || a == "--seed") && hasValue) {
      unsigned long long& dst = a == "--epochs" ? epochs : a == "--batch" ? batch : seed;
      if (!parseCount(argv[++i], dst) || (a == "--batch" && dst == 0)) {
        std::fprintf(stderr, "error: %s needs a%s integer, not \"%s\"\n", a.c_str(),
                     a == "--batch" ? " positive" : " non-negative", argv[i]);
        return 1;
      }
      seedGiven = seedGiven || a == "--seed";
    } else if (a == "--lr" && hasValue) {
      char* end = nullptr;
      lr = std::strtod(argv[++i], &end);
      if (!end || *end || !(lr > 0) || !std::isfinite(lr)) {
        std::fprintf(stderr, "error: --lr needs a positive number, not \"%s\"\n", argv[i]);
        return 1;
      }
    } else if ((a == "--data" || a == "--save" || a == "--labels") && hasValue) {
      (a == "--data" ? data : a == "--save" ? save : labels) = argv[++i];
    } else if (!a.empty() && a[0] != '-' && !data) {
      data = argv[i];
    } else {
      std::fprintf(stderr, "error: unknown or incomplete option \"%s\"\n", a.c_str());
      return usage(argv[0]);
    }
  }
  std::size_t kParams = @NAME@::kParams;  // not const: no warnings on loops that run 0 times
  if (dumpInit) {
    for (double v : initialParams(seed, kParams)) std::printf("%.17g\n", v);
    return 0;
  }
  if (!data) return usage(argv[0]);
  Data d;
  if (labels || looksLikeIdx(data)) {
    if (!readIdx(data, labels, @NAME@::kInputs, @NAME@::kTargets, @CLASSES@, d)) return 1;
  } else if (!readCsv(data, @NAME@::kInputs, @NAME@::kTargets, @CLASSES@, d)) {
    return 1;
  }
@INIT_PARAMS@
  std::size_t nIn = @NAME@::kInputs, nT = @NAME@::kTargets;
  const std::size_t b = static_cast<std::size_t>(batch) < d.rows ? static_cast<std::size_t>(batch) : d.rows;
  std::vector<real> grads(kParams), workspace(@NAME@::workspace_size(b)), x(b * nIn), t(b * nT);
  std::vector<std::size_t> order(d.rows);
  for (std::size_t i = 0; i < d.rows; ++i) order[i] = i;
  Rng shuffle(seed ^ 0x5851F42D4C957F2Dull);
  const real rate = static_cast<real>(lr);
  std::printf("training %s on %zu examples from %s: %llu epochs, batch %zu, lr %g, %zu params\n", "@NAME@", d.rows,
              data, epochs, b, lr, kParams);
  for (unsigned long long epoch = 1; epoch <= epochs; ++epoch) {
    for (std::size_t i = d.rows; i > 1; --i) {  // Fisher-Yates
      const std::size_t j = static_cast<std::size_t>(shuffle.next() % i);
      const std::size_t tmp = order[i - 1];
      order[i - 1] = order[j];
      order[j] = tmp;
    }
    double total = 0;
    for (std::size_t start = 0; start < d.rows; start += b) {
      const std::size_t m = d.rows - start < b ? d.rows - start : b;
      for (std::size_t e = 0; e < m; ++e) {
        const std::size_t r = order[start + e];
        for (std::size_t k = 0; k < nIn; ++k) x[e * nIn + k] = d.inputs[r * nIn + k];
        for (std::size_t k = 0; k < nT; ++k) t[e * nT + k] = d.targets[r * nT + k];
      }
      const real loss = @NAME@::loss_and_gradient(params.data(), x.data(), t.data(), m, grads.data(), workspace.data());
      for (std::size_t k = 0; k < kParams; ++k) params[k] -= rate * grads[k];
      total += static_cast<double>(loss) * static_cast<double>(m);
    }
    const double mean = total / static_cast<double>(d.rows);
    std::printf("epoch %llu/%llu  loss %.6g\n", epoch, epochs, mean);
    std::fflush(stdout);
    if (!std::isfinite(mean)) {
      std::fprintf(stderr, "error: the loss is not finite; try a smaller --lr\n");
      return 1;
    }
  }
  // The mean loss over all the examples at the final params (`nabla eval --params` computes it too).
  double total = 0;
  for (std::size_t start = 0; start < d.rows; start += b) {
    const std::size_t m = d.rows - start < b ? d.rows - start : b;
    const real loss = @NAME@::loss_and_gradient(params.data(), d.inputs.data() + start * nIn,
                                                d.targets.data() + start * nT, m, grads.data(), workspace.data());
    total += static_cast<double>(loss) * static_cast<double>(m);
  }
  std::printf("loss %.9g   (mean over the %zu examples, at the final params)\n", total / static_cast<double>(d.rows), d.rows);
  if (save && !saveParams(save, params)) return 1;
  return 0;
}
)CPP";

void replaceAll(std::string &s, const std::string &from, const std::string &to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

std::string Emitter::mainFile() const {
  if (!P.loss) throw InternalError("emitCpp: --main needs a program with a loss");
  std::string m = kMainTemplate;
  std::string table;
  for (const Decl &d : P.params) {
    const Shape &s = d.shape;
    // Rows and columns: the param's elements, for the draws; the shape, for the JSON.
    if (s.rank() > 4) throw InternalError("emitCpp: a param of rank above 4");
    const int64_t cols = s.rank() == 0 ? 1 : s[s.rank() - 1], rows = s.numel() / cols;
    std::string dims;
    for (int k = 0; k < 4; ++k) dims += fmt::format("{}{}", k ? ", " : "", k < s.rank() ? s[k] : 0);
    const char *kind = d.init.kind == Init::Constant ? "kConstant"
                       : d.init.kind == Init::Normal ? "kNormal"
                       : d.init.kind == Init::Uniform ? "kUniform"
                                                      : "kGlorot";
    double a = d.init.a, b = d.init.b;
    if (d.init.kind == Init::Glorot && s.rank() != 2) {
      // [out, in, k...]: the same draws as uniform in ±sqrt(6 / ((out + in)·Πk)) (Random.cpp).
      if (s.rank() < 2) throw InternalError("emitCpp: glorot init of a param of rank < 2");
      double field = 1;
      for (int k = 2; k < s.rank(); ++k) field *= static_cast<double>(s[k]);
      b = std::sqrt(6.0 / (static_cast<double>(s[0] + s[1]) * field));
      a = -b;
      kind = "kUniform";
    }
    table += fmt::format("    {{\"{}\", {}, {}, {}, {}, {}, {}, {}, {{{}}}}},\n", d.name, d.offset, s.rank(), rows, cols, kind,
                         doubleText(a), doubleText(b), dims);
  }
  const bool classes = P.targets.size() == 1 && P.targets[0].shape.rank() == 1 && P.targets[0].shape[0] > 1;
  std::string init;
  if (O.trainedParams && P.paramCount() > 0)
    init = fmt::format("  // kTrainedParams unless --seed is given.\n"
                       "  std::vector<real> params(@NAME@::kTrainedParams, @NAME@::kTrainedParams + kParams);\n"
                       "  if (seedGiven) {{\n"
                       "    const std::vector<double> p = initialParams(seed, kParams);\n"
                       "    params.assign(p.begin(), p.end());\n"
                       "  }}");
  else
    init = "  (void)seedGiven;\n"
           "  const std::vector<double> initial = initialParams(seed, kParams);\n"
           "  std::vector<real> params(initial.begin(), initial.end());";
  replaceAll(m, "@INIT_PARAMS@", init);
  replaceAll(m, "@PARAM_TABLE@", table);
  replaceAll(m, "@CLASSES@", classes ? std::to_string(P.targets[0].shape[0]) : "0");
  replaceAll(m, "@CLASS_NOTE@",
             classes ? fmt::format(" (or, for the target {}, one column holding a class index 0..{})",
                                   commentText(P.targets[0].name), P.targets[0].shape[0] - 1)
                     : "");
  replaceAll(m, "@TRAINED_NOTE@", O.trainedParams ? " (without --seed, training starts from kTrainedParams)" : "");
  replaceAll(m, "@FILE@", file());
  replaceAll(m, "@DTYPE@", dtype());
  replaceAll(m, "@NAME@", name_);
  return m;
}

} // namespace

CppFiles emitCpp(const Program &program, const loops::Program &loops, const CppEmitOptions &opts) {
  return Emitter(program, loops, opts).run();
}

} // namespace nabla
