// Typed errors. Every public entry point validates its input and throws one
// of these with a message a user can act on: the op's name, the shapes,
// dtypes or devices involved, and what was expected. Nothing aborts.
#pragma once

#include <stdexcept>
#include <string>

namespace metatape {

// Base of everything metatape throws; catch this to catch them all.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Shapes that do not fit the op (broadcasting, matmul inner dims, ranks).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A dtype the op does not accept, or two operands of different dtypes.
class DTypeError : public Error {
 public:
  using Error::Error;
};

// Operands on different devices, or a device this build or machine lacks.
class DeviceError : public Error {
 public:
  using Error::Error;
};

// Misuse of the autodiff machinery: non-scalar output without a seed, a
// released tape, an input that was not recorded or is not reachable.
class GradError : public Error {
 public:
  using Error::Error;
};

// A bad argument value that is not a shape, dtype or device (a negative
// stride, an axis out of range, an index out of bounds).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A file that cannot be read or written, or whose contents are not what
// they should be (truncated, corrupt, of another format); the message names
// the file and, for bad contents, the byte offset.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace metatape
