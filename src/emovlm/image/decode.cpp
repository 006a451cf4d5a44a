// JPEG (libjpeg-turbo) and PNG (libpng) decoding to RGB with Pillow's conversion rules, the format
// dispatch (GIF and BMP in their own files), and encoding.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <exception>

#include <jpeglib.h>  // needs <cstdio> first

#include <jerror.h>  // needs <jpeglib.h> first
#include <png.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/image/bmp.h"
#include "emovlm/image/gif.h"
#include "emovlm/image/image.h"
#ifdef EMOVLM_HAVE_WEBP
#include "emovlm/image/webp.h"
#endif

namespace emovlm {

namespace {

bool starts_with(const uint8_t* d, size_t n, const char* magic, size_t m) {
  return n >= m && std::memcmp(d, magic, m) == 0;
}

// ------------------------------------------------------------------------------------- JPEG

struct JpegErr {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  JpegErr* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_emit(j_common_ptr cinfo, int level) {
  JpegErr* e = reinterpret_cast<JpegErr*>(cinfo->err);
  // A premature end of the data is a truncated file: an error, as Pillow reports it.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = true;
}

// Returns "" on success, the libjpeg message otherwise. No C++ objects live across setjmp.
std::string decode_jpeg_raw(const uint8_t* data, size_t size, const std::string& name,
                            const DecodeOptions& opt, RgbImage* out,
                            std::exception_ptr* size_error) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  std::memset(&err, 0, sizeof err);
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit;
  std::vector<uint8_t>* row_buf = new std::vector<uint8_t>();
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    delete row_buf;
    return err.message[0] ? std::string(err.message) : std::string("decoder error");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(data), static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  try {
    check_image_size(name, cinfo.image_width, cinfo.image_height, opt);
  } catch (...) {  // refused by its size: rethrown as it is once libjpeg is cleaned up
    *size_error = std::current_exception();
    jpeg_destroy_decompress(&cinfo);
    delete row_buf;
    return "size";
  }
  bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  bool adobe = cinfo.saw_Adobe_marker;
  if (cinfo.num_components == 1)
    cinfo.out_color_space = JCS_GRAYSCALE;
  else if (cmyk)
    cinfo.out_color_space = JCS_CMYK;
  else
    cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int w = cinfo.output_width, h = cinfo.output_height, c = cinfo.output_components;
  *out = RgbImage(w, h);
  row_buf->resize(static_cast<size_t>(w) * c);
  while (cinfo.output_scanline < cinfo.output_height) {
    int y = cinfo.output_scanline;
    JSAMPROW rows[1] = {row_buf->data()};
    jpeg_read_scanlines(&cinfo, rows, 1);
    uint8_t* dst = out->row(y);
    const uint8_t* src = row_buf->data();
    for (int x = 0; x < w; ++x) {
      if (c == 1) {
        dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
      } else if (c == 3) {
        std::memcpy(dst + 3 * x, src + 3 * x, 3);
      } else {
        // Pillow: Adobe CMYK is stored inverted ("CMYK;I"); then cmyk2rgb.
        int cc = src[4 * x], mm = src[4 * x + 1], yy = src[4 * x + 2], kk = src[4 * x + 3];
        if (adobe) cc = 255 - cc, mm = 255 - mm, yy = 255 - yy, kk = 255 - kk;
        int nk = 255 - kk;
        auto muldiv255 = [](int a, int b) {
          int t = a * b + 128;
          return ((t >> 8) + t) >> 8;
        };
        auto clip8 = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); };
        dst[3 * x] = clip8(nk - muldiv255(cc, nk));
        dst[3 * x + 1] = clip8(nk - muldiv255(mm, nk));
        dst[3 * x + 2] = clip8(nk - muldiv255(yy, nk));
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  bool truncated = err.truncated;
  jpeg_destroy_decompress(&cinfo);
  delete row_buf;
  return truncated ? "truncated: premature end of JPEG data" : "";
}

// -------------------------------------------------------------------------------------- PNG

struct PngReadState {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  PngReadState* s = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (s->pos + n > s->size) png_error(png, "truncated: unexpected end of PNG data");
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

void png_on_error(png_structp png, png_const_charp msg) {
  PngReadState* s = static_cast<PngReadState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof s->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

std::string decode_png_raw(const uint8_t* data, size_t size, const std::string& name,
                           const DecodeOptions& opt, RgbImage* out,
                           std::exception_ptr* size_error) {
  PngReadState st{data, size, 0, {0}};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
  if (!png) return "cannot allocate the PNG decoder";
  png_infop info = png_create_info_struct(png);
  std::vector<uint8_t>* buf = new std::vector<uint8_t>();
  std::vector<png_bytep>* rows = new std::vector<png_bytep>();
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    delete buf;
    delete rows;
    return st.message[0] ? std::string(st.message) : std::string("decoder error");
  }
  png_set_read_fn(png, &st, png_read_mem);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  try {
    check_image_size(name, w, h, opt);
  } catch (...) {  // refused by its size: rethrown as it is once libpng is cleaned up
    *size_error = std::current_exception();
    png_destroy_read_struct(&png, &info, nullptr);
    delete buf;
    delete rows;
    return "size";
  }
  int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  bool gray16 = depth == 16 && color == PNG_COLOR_TYPE_GRAY;
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !gray16)
    png_set_strip_16(png);        // keeps the high byte, as Pillow's ";16B" modes
  if (gray16) png_set_swap(png);  // native-endian 16-bit samples
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  // A non-interlaced image is read row by row through one row buffer: its decoding holds 3 bytes
  // per pixel whatever its depth (a 16-bit RGBA image would need 8 more in a whole-image buffer);
  // an interlaced one needs all its rows at once.
  const bool whole = passes > 1;
  *out = RgbImage(static_cast<int>(w), static_cast<int>(h));
  buf->resize(rowbytes * (whole ? h : 1));
  if (whole) {
    rows->resize(h);
    for (png_uint_32 y = 0; y < h; ++y) (*rows)[y] = buf->data() + y * rowbytes;
    png_read_image(png, rows->data());
  }
  for (png_uint_32 y = 0; y < h; ++y) {
    if (!whole) png_read_row(png, buf->data(), nullptr);
    const uint8_t* src = whole ? (*rows)[y] : buf->data();
    uint8_t* dst = out->row(static_cast<int>(y));
    for (png_uint_32 x = 0; x < w; ++x) {
      if (gray16) {
        uint16_t v;
        std::memcpy(&v, src + 2 * x, 2);
        uint8_t g = v > 255 ? 255 : static_cast<uint8_t>(v);  // Pillow's I;16 -> RGB clips
        dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
      } else if (channels <= 2) {  // gray, gray + alpha
        uint8_t g = src[channels * x];
        dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
      } else {  // RGB, RGBA: alpha dropped
        std::memcpy(dst + 3 * x, src + channels * x, 3);
      }
    }
  }
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  delete buf;
  delete rows;
  return "";
}

// ---------------------------------------------------------------------------------- encoding

struct PngWriteState {
  std::string* out;
  char message[256];
};

void png_write_mem(png_structp png, png_bytep data, png_size_t n) {
  PngWriteState* s = static_cast<PngWriteState*>(png_get_io_ptr(png));
  s->out->append(reinterpret_cast<const char*>(data), n);
}
void png_flush_mem(png_structp) {}
void png_on_write_error(png_structp png, png_const_charp msg) {
  PngWriteState* s = static_cast<PngWriteState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof s->message, "%s", msg);
  png_longjmp(png, 1);
}

}  // namespace

void check_image_size(const std::string& name, int64_t w, int64_t h, const DecodeOptions& opt) {
  if (w <= 0 || h <= 0) throw Error(cat(name, ": invalid image size ", w, "x", h));
  if (opt.max_pixels > 0 && w * h > opt.max_pixels)
    throw Error(cat(name, ": image of ", w, "x", h, " = ", w * h, " pixels exceeds the limit of ",
                    opt.max_pixels,
                    " pixels (a possible decompression bomb; raise the limit to accept it)"));
  if (opt.admit) opt.admit(w, h);
}

std::string sniff_image_format(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "\xFF\xD8\xFF", 3)) return "JPEG";
  if (starts_with(d, n, "\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return "GIF";
  if (starts_with(d, n, "BM", 2)) return "BMP";
  if (n >= 12 && starts_with(d, n, "RIFF", 4) && std::memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF";
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
  return "";
}

RgbImage decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                             const DecodeOptions& options) {
  if (size == 0) throw Error(cat(name, ": empty file, not an image"));
  const std::string format = sniff_image_format(data, size);
  RgbImage img;
  std::exception_ptr size_error;
  std::string err;
  if (format == "JPEG") {
    err = decode_jpeg_raw(data, size, name, options, &img, &size_error);
    if (size_error) std::rethrow_exception(size_error);
    if (!err.empty()) throw Error(cat(name, ": corrupt JPEG: ", err));
  } else if (format == "PNG") {
    err = decode_png_raw(data, size, name, options, &img, &size_error);
    if (size_error) std::rethrow_exception(size_error);
    if (!err.empty()) throw Error(cat(name, ": corrupt PNG: ", err));
  } else if (format == "GIF") {
    img = decode_gif(data, size, name, options);
  } else if (format == "BMP") {
    img = decode_bmp(data, size, name, options);
#ifdef EMOVLM_HAVE_WEBP
  } else if (format == "WebP") {
    img = decode_webp(data, size, name, options);
#endif
  } else {
    const char* supported =
        webp_supported() ? "JPEG, PNG, GIF, BMP and WebP" : "JPEG, PNG, GIF and BMP";
    if (format == "WebP")
      throw Error(cat(name,
                      ": unsupported image format WebP (this build has no libwebp: install "
                      "libwebp-dev and rebuild; ",
                      supported, " are supported)"));
    if (!format.empty())
      throw Error(
          cat(name, ": unsupported image format ", format, " (", supported, " are supported)"));
    throw Error(cat(name, ": not a ",
                    webp_supported() ? "JPEG, PNG, GIF, BMP or WebP" : "JPEG, PNG, GIF or BMP",
                    " image"));
  }
  return img;
}

bool webp_supported() {
#ifdef EMOVLM_HAVE_WEBP
  return true;
#else
  return false;
#endif
}

RgbImage decode_image_file(const std::string& path, const DecodeOptions& options) {
  MappedFile f(path);
  return decode_image_memory(f.data(), f.size(), path, options);
}

std::string encode_jpeg(const RgbImage& image, int quality) {
  if (image.empty()) throw Error("encode_jpeg: empty image");
  jpeg_compress_struct cinfo;
  JpegErr err;
  std::memset(&err, 0, sizeof err);
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  unsigned char* mem = nullptr;
  unsigned long mem_size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(mem);
    throw Error(cat("encode_jpeg: ", err.message));
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &mem, &mem_size);
  cinfo.image_width = image.width;
  cinfo.image_height = image.height;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.row(cinfo.next_scanline));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(mem), mem_size);
  jpeg_destroy_compress(&cinfo);
  std::free(mem);
  return out;
}

std::string encode_png(const RgbImage& image) {
  if (image.empty()) throw Error("encode_png: empty image");
  std::string out;
  PngWriteState st{&out, {0}};
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, png_on_write_error, png_on_warning);
  if (!png) throw Error("encode_png: cannot allocate the encoder");
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error(cat("encode_png: ", st.message));
  }
  png_set_write_fn(png, &st, png_write_mem, png_flush_mem);
  png_set_IHDR(png, info, image.width, image.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < image.height; ++y) png_write_row(png, const_cast<png_bytep>(image.row(y)));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_image_file(const std::string& path, const RgbImage& image, int jpeg_quality) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::string bytes;
  if (ext == ".jpg" || ext == ".jpeg")
    bytes = encode_jpeg(image, jpeg_quality);
  else if (ext == ".png")
    bytes = encode_png(image);
  else
    throw Error(cat(path, ": unknown image extension '", ext, "' (use .jpg, .jpeg or .png)"));
  write_file_atomic(path, bytes);
}

}  // namespace emovlm
