// Error types thrown by the kvcache C++ API.
//
// Three classes of failure (see README "Errors"):
//  - a broken internal invariant asserts (a library bug, never the caller's fault);
//  - running out of a resource throws PoolExhausted, which the caller can handle;
//  - invalid arguments or malformed input throw InvalidArgument / FormatError with a
//    message naming the argument or file and what is wrong.
// Every public call that throws leaves the object it was called on unchanged.
#pragma once

#include <stdexcept>
#include <string>

namespace kvcache {

/// Base of every exception the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A caller passed an argument outside the documented contract, or called in the wrong order.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A PagePool has no page left under its byte budget.
class PoolExhausted : public Error {
 public:
  using Error::Error;
};

/// A file (checkpoint, tokenizer, token file, snapshot) is malformed, truncated or hostile.
class FormatError : public Error {
 public:
  using Error::Error;
};

}  // namespace kvcache
