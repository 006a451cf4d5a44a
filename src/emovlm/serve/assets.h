// The web page's files (serve/assets/), compiled into the binary by a build step
// (cmake/embed_assets.cmake): the page needs nothing from the network.
#pragma once

#include <cstddef>
#include <string_view>

namespace emovlm {

struct Asset {
  const char* path;          // "/app.js"; the page itself is "/index.html"
  const char* content_type;  // "text/javascript; charset=utf-8"
  const unsigned char* data;
  size_t size;
};

// The asset served at `path` ("/" is the page), or nullptr.
const Asset* find_asset(std::string_view path);

}  // namespace emovlm
