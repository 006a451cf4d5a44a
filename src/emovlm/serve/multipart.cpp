// multipart/form-data parsing (see multipart.h).
#include "emovlm/serve/multipart.h"

#include <cctype>

#include "emovlm/serve/http.h"

namespace emovlm::http {

namespace {

constexpr size_t kMaxParts = 64;
constexpr size_t kMaxPartHeader = 8192;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The parameters of a header value: `type; a=1; b="x; y"` -> {("a", "1"), ("b", "x; y")}; names
// lowercased; in quoted strings only \" is an escape (browsers send backslashes in file names as
// they are).
std::vector<std::pair<std::string, std::string>> parameters(std::string_view v) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = v.find(';');
  while (i != std::string_view::npos && i < v.size()) {
    ++i;
    const size_t eq = v.find('=', i);
    const size_t semi = v.find(';', i);
    if (eq == std::string_view::npos || (semi != std::string_view::npos && semi < eq)) {
      i = semi;
      continue;
    }
    const std::string name = lower(trim(v.substr(i, eq - i)));
    size_t j = eq + 1;
    while (j < v.size() && (v[j] == ' ' || v[j] == '\t')) ++j;
    std::string value;
    if (j < v.size() && v[j] == '"') {
      for (++j; j < v.size() && v[j] != '"'; ++j) {
        if (v[j] == '\\' && j + 1 < v.size() && v[j + 1] == '"') ++j;
        value += v[j];
      }
      i = v.find(';', j);
    } else {
      const size_t end = v.find(';', j);
      value = std::string(
          trim(v.substr(j, end == std::string_view::npos ? std::string_view::npos : end - j)));
      i = end;
    }
    out.emplace_back(name, value);
  }
  return out;
}

// RFC 8187's ext-value (UTF-8''na%C3%AFve.png) decoded; "" when it is not one.
std::string ext_value(std::string_view v) {
  const size_t q = v.find("''");
  if (q == std::string_view::npos || lower(v.substr(0, q)) != "utf-8") return "";
  std::string out;
  for (size_t i = q + 2; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(v.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

}  // namespace

bool is_multipart(std::string_view content_type) {
  return lower(trim(content_type.substr(0, content_type.find(';')))) == "multipart/form-data";
}

std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view content_type) {
  std::string boundary;
  for (const auto& [k, v] : parameters(content_type))
    if (k == "boundary") boundary = v;
  if (boundary.empty() || boundary.size() > 200)
    throw HttpError(400,
                    "multipart/form-data without a valid boundary parameter in its Content-Type");
  const std::string delim = "--" + boundary;
  // the first delimiter: at the start, or after a preamble ending in CRLF
  size_t pos = body.substr(0, delim.size()) == delim ? 0 : body.find("\r\n" + delim);
  if (pos == std::string_view::npos) throw HttpError(400, "multipart body without its boundary");
  if (pos != 0) pos += 2;
  std::vector<MultipartPart> parts;
  for (;;) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--") return parts;  // the closing delimiter
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n")
      throw HttpError(400, "malformed multipart body: a boundary line not ending in CRLF");
    pos += 2;
    const size_t head_end = body.find("\r\n\r\n", pos);
    const bool no_headers = body.substr(pos, 2) == "\r\n";
    if (!no_headers && (head_end == std::string_view::npos || head_end - pos > kMaxPartHeader))
      throw HttpError(400, "malformed multipart body: a part's headers do not end");
    MultipartPart part;
    std::string filename_ext;
    if (!no_headers) {
      std::string_view head = body.substr(pos, head_end - pos);
      while (!head.empty()) {
        const size_t eol = head.find("\r\n");
        const std::string_view line = head.substr(0, eol);
        head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos)
          throw HttpError(400, "malformed multipart body: a part header without ':'");
        const std::string name = lower(trim(line.substr(0, colon)));
        const std::string_view value = trim(line.substr(colon + 1));
        if (name == "content-disposition") {
          for (const auto& [k, v] : parameters(value)) {
            if (k == "name") part.name = v;
            if (k == "filename") part.filename = v;
            if (k == "filename*") filename_ext = ext_value(v);
          }
        } else if (name == "content-type") {
          part.content_type = std::string(value);
        }
      }
      pos = head_end + 4;
    } else {
      pos += 2;
    }
    if (!filename_ext.empty()) part.filename = filename_ext;
    const size_t end = body.find("\r\n" + delim, pos);
    if (end == std::string_view::npos)
      throw HttpError(400, "malformed multipart body: a part does not end (truncated upload?)");
    part.content = body.substr(pos, end - pos);
    if (parts.size() == kMaxParts)
      throw HttpError(400, cat("multipart body with more than ", kMaxParts, " parts"));
    parts.push_back(std::move(part));
    pos = end + 2;
  }
}

}  // namespace emovlm::http
