// Expected<T>: a value or a user-facing error, for fallible setup and I/O (errors are values).
// The error text is complete and printable, e.g. "data.csv:7: error: expected 6 columns, found 5".
#pragma once
#include <string>
#include <utility>
#include <variant>

namespace nabla {

struct Error {
  std::string message;
};

template <class T> class [[nodiscard]] Expected {
public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Error e) : v_(std::move(e)) {}
  explicit operator bool() const { return v_.index() == 0; }
  T &operator*() { return std::get<0>(v_); }
  const T &operator*() const { return std::get<0>(v_); }
  T *operator->() { return &std::get<0>(v_); }
  const T *operator->() const { return &std::get<0>(v_); }
  const Error &error() const { return std::get<1>(v_); }

private:
  std::variant<T, Error> v_;
};

} // namespace nabla
