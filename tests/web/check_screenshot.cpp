// Checks a browser's screenshot of an HTML report (tests/web/report_screenshot.sh): the PNG has
// the window's size, is not blank, nothing is cut off at its right edge, and every legend
// swatch colour of the page (class="swatch" fill="#rrggbb") was painted.
// Usage: check_screenshot SCREENSHOT.png WIDTH HEIGHT PAGE.html
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <string>

#include "emovlm/core/files.h"
#include "emovlm/image/image.h"

using namespace emovlm;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: check_screenshot SCREENSHOT.png WIDTH HEIGHT PAGE.html\n");
    return 2;
  }
  try {
    const RgbImage img = decode_image_file(argv[1]);
    const int W = std::atoi(argv[2]), H = std::atoi(argv[3]);
    int failures = 0;
    auto fail = [&](const std::string& why) {
      std::fprintf(stderr, "%s: %s\n", argv[1], why.c_str());
      ++failures;
    };
    if (img.width != W || img.height != H)
      fail("is " + std::to_string(img.width) + "x" + std::to_string(img.height) + ", not " +
           argv[2] + "x" + argv[3]);
    std::set<uint32_t> colours;
    int64_t inked = 0, right_edge = 0;
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) {
        const uint8_t* p = img.row(y) + 3 * x;
        colours.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
        const bool white = p[0] == 255 && p[1] == 255 && p[2] == 255;
        inked += !white;
        if (x >= img.width - 8 && !white) ++right_edge;
      }
    const double share = static_cast<double>(inked) / (static_cast<double>(img.width) * img.height);
    std::printf("%s: %dx%d, %zu colours, %.1f%% of the pixels not white\n", argv[1], img.width,
                img.height, colours.size(), 100 * share);
    if (colours.size() < 64)
      fail("only " + std::to_string(colours.size()) + " colours: the charts were not drawn");
    if (share < 0.03) fail("almost blank");
    if (right_edge > 0)
      fail(std::to_string(right_edge) +
           " pixels drawn at the right edge: the page is wider than the window");
    // the swatch colours named in the page
    const std::string page = read_file(argv[4]);
    const std::string marker = "class=\"swatch\"";
    std::set<std::string> swatches;
    for (size_t at = page.find("<rect "); at != std::string::npos;
         at = page.find("<rect ", at + 1)) {
      const std::string tag = page.substr(at, page.find('>', at) - at);
      const size_t fill = tag.find("fill=\"#");
      if (tag.find(marker) == std::string::npos || fill == std::string::npos) continue;
      const std::string hex = tag.substr(fill + 7, tag.find('"', fill + 7) - fill - 7);
      if (hex.size() != 6 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        fail("a swatch colour that is not #rrggbb: #" + hex);
      else
        swatches.insert(hex);
    }
    if (swatches.empty()) fail(std::string(argv[4]) + " has no legend swatches");
    for (const std::string& hex : swatches) {
      const uint32_t want = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
      int64_t n = 0;
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x) {
          const uint8_t* p = img.row(y) + 3 * x;
          n += (uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]) == want;
        }
      if (n < 100)
        fail("the swatch colour #" + hex + " covers " + std::to_string(n) + " pixels");
      else
        std::printf("  #%s: %lld pixels\n", hex.c_str(), static_cast<long long>(n));
    }
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "check_screenshot: %s\n", e.what());
    return 1;
  }
}
