// JSON-over-HTTP client.
#include "emovlm/core/http_client.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

namespace emovlm {

HttpEndpoint parse_endpoint(const std::string& url, const std::string& suffix) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) throw Error(cat("endpoint '", url, "' is not an http(s) URL"));
  const size_t slash = url.find('/', scheme + 3);
  HttpEndpoint ep;
  ep.scheme_host_port = url.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : url.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() < suffix.size() ||
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0)
    path += suffix;
  ep.path = path;
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (url.rfind("https://", 0) == 0)
    throw Error("this build has no TLS support (OpenSSL): use an http:// endpoint");
#endif
  return ep;
}

namespace {
httplib::Client make_client(const HttpEndpoint& ep, double timeout_s) {
  httplib::Client c(ep.scheme_host_port);
  const auto sec = static_cast<time_t>(timeout_s);
  const auto usec = static_cast<time_t>((timeout_s - static_cast<double>(sec)) * 1e6);
  c.set_connection_timeout(std::min<time_t>(sec, 10), 0);
  c.set_read_timeout(sec, usec);
  c.set_write_timeout(sec, usec);
  return c;
}
httplib::Headers headers(const std::string& key) {
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  return h;
}
}  // namespace

void check_endpoint(const HttpEndpoint& ep, const std::string& api_key, double timeout_s) {
  httplib::Client c = make_client(ep, std::min(timeout_s, 30.0));
  std::string base = ep.path.substr(0, ep.path.rfind("/chat/completions"));
  auto res = c.Get((base + "/models").c_str(), headers(api_key));
  if (!res)
    throw HttpFatal(
        cat("cannot reach ", ep.scheme_host_port, " (", httplib::to_string(res.error()), ")"));
  if (res->status == 401 || res->status == 403)
    throw HttpFatal(cat(ep.scheme_host_port, " refused the API key (HTTP ", res->status,
                        "); set it in the environment variable named by --api-key-env"));
}

nlohmann::json post_json_with_retries(const HttpEndpoint& ep, const std::string& api_key,
                                      const nlohmann::json& body, int max_retries, double backoff_s,
                                      double timeout_s) {
  httplib::Client c = make_client(ep, timeout_s);
  const std::string payload = body.dump();
  std::string last;
  for (int attempt = 0; attempt <= max_retries; ++attempt) {
    if (attempt > 0) {
      const double wait = std::min(30.0, backoff_s * std::pow(2.0, attempt - 1));
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    }
    auto res = c.Post(ep.path.c_str(), headers(api_key), payload, "application/json");
    if (!res) {
      last = cat("request failed (", httplib::to_string(res.error()), ")");
      if (res.error() == httplib::Error::Connection)
        throw HttpFatal(cat("cannot reach ", ep.scheme_host_port, ": ", last));
      continue;  // timeouts and dropped connections are retried
    }
    if (res->status == 401 || res->status == 403)
      throw HttpFatal(cat(ep.scheme_host_port, " refused the API key (HTTP ", res->status, ")"));
    if (res->status == 429 || res->status >= 500) {
      last = cat("HTTP ", res->status);
      continue;
    }
    if (res->status != 200)
      throw Error(cat(ep.scheme_host_port, ep.path, ": HTTP ", res->status, ": ",
                      res->body.substr(0, 200)));
    try {
      return nlohmann::json::parse(res->body);
    } catch (const nlohmann::json::exception& e) {
      throw Error(cat(ep.scheme_host_port, ep.path, ": the answer is not JSON: ", e.what()));
    }
  }
  throw Error(cat(ep.scheme_host_port, ep.path, ": gave up after ", max_retries + 1,
                  " attempts (last: ", last, ")"));
}

}  // namespace emovlm
