// WebP through libwebp's animation decoder, as Pillow reads every WebP file (a still image is an
// animation of one frame): the first frame on the canvas, RGBA, then alpha dropped.
#include "emovlm/image/webp.h"

#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>
#include <memory>

#include "emovlm/core/error.h"

namespace emovlm {

RgbImage decode_webp(const uint8_t* data, size_t size, const std::string& name,
                     const DecodeOptions& options) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data, size, &features) != VP8_STATUS_OK)
    throw Error(cat(name, ": corrupt WebP: bad header"));
  // the canvas size (VP8X's for an animation), checked before the decoder allocates the canvas
  check_image_size(name, features.width, features.height, options);
  WebPAnimDecoderOptions opts;
  if (!WebPAnimDecoderOptionsInit(&opts))
    throw Error(cat(name, ": WebP: libwebp version mismatch"));
  opts.color_mode = MODE_RGBA;
  opts.use_threads = 0;
  WebPData bytes{data, size};
  std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> dec(
      WebPAnimDecoderNew(&bytes, &opts), WebPAnimDecoderDelete);
  if (!dec) throw Error(cat(name, ": corrupt WebP: cannot parse the file"));
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(dec.get(), &info))
    throw Error(cat(name, ": corrupt WebP: no image information"));
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(dec.get(), &rgba, &timestamp))
    throw Error(cat(name, ": corrupt WebP: truncated data"));
  RgbImage img(static_cast<int>(info.canvas_width), static_cast<int>(info.canvas_height));
  const size_t n = static_cast<size_t>(img.width) * img.height;
  for (size_t i = 0; i < n; ++i) std::memcpy(&img.pixels[3 * i], rgba + 4 * i, 3);
  return img;
}

}  // namespace emovlm
