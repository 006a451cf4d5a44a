// Writes the server tests' bundle under the folder given (the CTest fixture of the serve tests).
#include <cstdio>
#include <exception>

#include "serve_bundle.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_serve_bundle DIR\n");
    return 2;
  }
  try {
    std::printf("%s\n", emovlm::test::make_serve_bundle(argv[1]).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_serve_bundle: %s\n", e.what());
    return 1;
  }
  return 0;
}
