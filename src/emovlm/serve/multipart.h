// multipart/form-data bodies (browser uploads): the parts, their field and file names, without
// copying the content.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace emovlm::http {

struct MultipartPart {
  std::string name, filename, content_type;  // from the part's headers ("" when absent)
  std::string_view content;                  // points into the body
};

// Whether a Content-Type is multipart/form-data.
bool is_multipart(std::string_view content_type);

// The parts of a multipart/form-data body whose Content-Type (with its boundary) is given;
// throws HttpError 400 naming what is malformed.
std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view content_type);

}  // namespace emovlm::http
