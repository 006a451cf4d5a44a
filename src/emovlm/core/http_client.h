// A small JSON-over-HTTP client for OpenAI-compatible endpoints (cpp-httplib): retries with
// exponential backoff on 429, 5xx and timeouts; a wrong key or an unreachable endpoint is fatal.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/core/error.h"

namespace emovlm {

// An error that must stop the whole run at once (authentication, unreachable endpoint).
class HttpFatal : public Error {
 public:
  using Error::Error;
};

struct HttpEndpoint {
  std::string scheme_host_port;  // "http://127.0.0.1:8080"
  std::string path;              // "/v1/chat/completions"
};

// "http://host:port/v1" + "/chat/completions", or a full URL ending in the path already.
HttpEndpoint parse_endpoint(const std::string& url, const std::string& default_suffix);
// Probes the endpoint (GET on its base path's /models); throws HttpFatal when it cannot be
// reached or refuses the key.
void check_endpoint(const HttpEndpoint& ep, const std::string& api_key, double timeout_s);
nlohmann::json post_json_with_retries(const HttpEndpoint& ep, const std::string& api_key,
                                      const nlohmann::json& body, int max_retries, double backoff_s,
                                      double timeout_s);

}  // namespace emovlm
