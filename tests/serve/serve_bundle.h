// A small bundle for the server tests (the tiny reference Qwen2-VL, a head and a gate trained one
// epoch each on a generated dataset): made once per build folder, in seconds.
#pragma once

#include <string>

namespace emovlm::test {

// Writes the bundle (and what it is made from) under `dir` unless `dir`/bundle/bundle.json exists;
// returns `dir`/bundle. The dataset's test images are in `dir`/data/test.
std::string make_serve_bundle(const std::string& dir);

// The bundle the serve tests share: EMOVLM_SERVE_BUNDLE_DIR (the CTest fixture made it), else made
// under the build folder on first use.
std::string serve_bundle();

}  // namespace emovlm::test
