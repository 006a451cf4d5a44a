// Instruction data: the OpenAI-compatible client and the importers.
#include "emovlm/data/instructions.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/http_client.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/progress.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/data/labels.h"
#include "emovlm/image/image.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n*#:"), e = s.find_last_not_of(" \t\r\n*#");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18], out += t[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += '=';
  }
  return out;
}

}  // namespace

std::string image_data_url(const std::string& path) {
  std::string bytes = read_file(path);
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const std::string format = sniff_image_format(data, bytes.size());
  std::string mime;
  if (format == "JPEG" || format == "PNG" || format == "GIF" || format == "WebP") {
    mime = format == "JPEG"  ? "image/jpeg"
           : format == "PNG" ? "image/png"
           : format == "GIF" ? "image/gif"
                             : "image/webp";
  } else {  // what endpoints do not take (BMP), re-encoded; what cannot be read, an error naming
            // the file
    bytes = encode_png(decode_image_memory(data, bytes.size(), path));
    mime = "image/png";
  }
  return "data:" + mime + ";base64," + base64(bytes);
}

std::pair<std::string, std::string> split_observation_reasoning(const std::string& answer) {
  // a heading line: optional markdown/numbering, then the keyword, then ':' or end of heading
  static const std::regex key(
      R"((^|\n)[ \t>#*_\-]*(\d+[.)]\s*)?[*_]*\s*key\s+elements?[*_]*[ \t]*[:\-]?[*_]*[ \t]*)",
      std::regex::icase);
  static const std::regex reason(
      R"((^|\n)[ \t>#*_\-]*(\d+[.)]\s*)?[*_]*\s*reasoning[*_]*[ \t]*[:\-]?[*_]*[ \t]*)",
      std::regex::icase);
  std::smatch k, r;
  const bool hk = std::regex_search(answer, k, key), hr = std::regex_search(answer, r, reason);
  std::string obs, why;
  if (hk && hr && k.position(0) < r.position(0)) {
    obs = answer.substr(k.position(0) + k.length(0), r.position(0) - k.position(0) - k.length(0));
    why = answer.substr(r.position(0) + r.length(0));
  } else if (hk && hr) {
    why = answer.substr(r.position(0) + r.length(0), k.position(0) - r.position(0) - r.length(0));
    obs = answer.substr(k.position(0) + k.length(0));
  } else if (hk) {
    obs = answer.substr(k.position(0) + k.length(0));
  } else if (hr) {
    why = answer.substr(r.position(0) + r.length(0));
  }
  return {trim(obs), trim(why)};
}

std::string instruction_request_prompt(const std::string& emotion) {
  return "The emotion this image conveys is " + emotion +
         ". Without naming that emotion, write two sections:\n1. Key elements: the visual elements "
         "of the image that "
         "convey it (objects, people, colours, light, composition).\n2. Reasoning: how a viewer "
         "would infer the emotion "
         "from those elements, step by step.";
}

json make_instructions(const InstructOptions& o) {
  if (o.endpoint.empty() || o.model.empty())
    throw Error("instruct make: --endpoint and --model are required");
  const char* key = std::getenv(o.api_key_env.c_str());
  const std::string api_key = key ? key : "";
  DatasetOptions dopt;
  dopt.labels = o.labels;
  Dataset d = load_dataset(o.data, dopt);
  const std::vector<Sample>& samples = d.split(o.split);

  // nothing to ask about when no image of the split can be opened (before any paid request)
  check_readable(cat("the ", o.split, " split"), o.data, samples.size(),
                 unreadable_by_stat(samples));
  OutputLock lock(o.out, OutputLock::Kind::File);

  // resume: images already in the file (by their identity, however their path was spelled) are
  // skipped; a torn last line is dropped
  std::set<std::string> done;
  if (file_exists(o.out)) {
    std::string text = read_file(o.out), kept;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) break;  // the line a crash cut short
      if (j.value("kind", "") != "categorical" && j.contains("image") && j["image"].is_string())
        done.insert(path_identity(resolve_stored_path(j["image"].get<std::string>(), o.out)));
      kept += line + "\n";
    }
    if (kept.size() != text.size()) write_file_atomic(o.out, kept);
  }
  std::vector<size_t> todo;
  for (size_t i = 0; i < samples.size(); ++i)
    if (!done.count(path_identity(samples[i].path))) todo.push_back(i);

  HttpEndpoint ep = parse_endpoint(o.endpoint, "/chat/completions");
  // one probe first: a wrong key or an unreachable endpoint stops here, before any work
  if (!todo.empty()) check_endpoint(ep, api_key, o.timeout_s);

  std::ofstream out(o.out, std::ios::app);
  if (!out) throw Error(cat(o.out, ": cannot open for appending"));
  std::mutex mu;
  std::atomic<size_t> next{0};
  json failures = json::array();
  std::atomic<bool> fatal{false};
  std::string fatal_msg;
  Progress bar("instructions", static_cast<int64_t>(todo.size()), "img");
  auto worker = [&] {
    while (!fatal) {
      const size_t k = next++;
      if (k >= todo.size()) return;
      const Sample& s = samples[todo[k]];
      const std::string label = d.labels.labels[s.label];
      try {
        json body = {
            {"model", o.model},
            {"max_tokens", o.max_tokens},
            {"messages",
             {{{"role", "user"},
               {"content",
                {{{"type", "text"}, {"text", instruction_request_prompt(label)}},
                 {{"type", "image_url"}, {"image_url", {{"url", image_data_url(s.path)}}}}}}}}}};
        json resp =
            post_json_with_retries(ep, api_key, body, o.max_retries, o.backoff_s, o.timeout_s);
        std::string content =
            resp.at("choices").at(0).at("message").at("content").get<std::string>();
        auto [obs, why] = split_observation_reasoning(content);
        if (obs.empty() || why.empty())
          throw Error("the answer lacks the key-elements or the reasoning section");
        std::string lines =
            instruction_line({s.path, label, "observation", kObservationPrompt, obs}, o.out) +
            "\n" + instruction_line({s.path, label, "reasoning", kReasoningPrompt, why}, o.out) +
            "\n";
        if (o.categorical)
          lines += instruction_line({s.path, label, "categorical", categorical_prompt(d.labels),
                                     categorical_answer(label)},
                                    o.out) +
                   "\n";
        std::lock_guard<std::mutex> l(mu);
        out << lines << std::flush;
        bar.advance();
      } catch (const HttpFatal& e) {
        std::lock_guard<std::mutex> l(mu);
        if (!fatal) fatal_msg = e.what();
        fatal = true;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> l(mu);
        failures.push_back({{"image", s.path}, {"error", e.what()}});
        bar.advance();
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, o.concurrency); ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  out.close();
  if (fatal) throw Error(cat("instruct make stopped: ", fatal_msg));
  if (!todo.empty() && failures.size() == todo.size())
    throw Error(cat("instruct make: none of the ", todo.size(),
                    " requests gave an answer (first: ", failures[0]["image"].get<std::string>(),
                    ": ", failures[0]["error"].get<std::string>(), ")"));
  json report = {{"out", o.out},
                 {"requested", todo.size()},
                 {"skipped_already_done", done.size()},
                 {"failed", failures},
                 {"written", todo.size() - failures.size()}};
  return report;
}

json import_instructions(const std::string& format, const std::string& src, const std::string& out,
                         const std::string& labels, const std::string& image_root) {
  json in = read_json_file(src);
  // the source's image paths are relative to --image-root, else to the source file's folder
  const std::string root = image_root.empty() ? parent_folder(src) : image_root;
  auto image_path = [&](const std::string& p) {
    return p.empty() || p[0] == '/' ? p : (fs::path(root) / p).string();
  };
  if (!in.is_array()) throw Error(cat(src, ": expected a list of entries"));
  LabelSet ls = LabelSet::from_spec(labels);
  std::string lines;
  int64_t n = 0, skipped = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const json& e = in[i];
    const std::string where = cat(src, ": entry ", i);
    if (format == "reference") {
      std::string img = image_path(json_optional<std::string>(
          e, "img_path", json_optional<std::string>(e, "img", "", where), where));
      std::string label = json_required<std::string>(e, "label", where);
      auto [obs, why] =
          split_observation_reasoning(json_required<std::string>(e, "gpt_response", where));
      if (obs.empty() || why.empty()) {
        ++skipped;
        continue;
      }
      lines += instruction_line({img, label, "observation", kObservationPrompt, obs}, out) + "\n";
      lines += instruction_line({img, label, "reasoning", kReasoningPrompt, why}, out) + "\n";
      lines +=
          instruction_line(
              {img, label, "categorical", categorical_prompt(ls), categorical_answer(label)}, out) +
          "\n";
      n += 3;
    } else if (format == "llava") {
      std::string img = image_path(json_required<std::string>(e, "image", where));
      const json& conv = e.at("conversations");
      for (size_t k = 0; k + 1 < conv.size(); k += 2) {
        std::string prompt = conv[k].value("value", ""), answer = conv[k + 1].value("value", "");
        prompt = std::regex_replace(prompt, std::regex(R"(<image>\s*)"), "");
        ParsedAnswer pa = parse_categorical_answer(answer, ls);
        lines +=
            instruction_line({img, pa.index >= 0 ? ls.labels[pa.index] : "",
                              pa.index >= 0 ? "categorical" : "conversation", trim(prompt), answer},
                             out) +
            "\n";
        ++n;
      }
    } else {
      throw Error(cat("instruct import: --format must be reference or llava, not '", format, "'"));
    }
  }
  if (lines.empty()) throw Error(cat(src, ": no instructions to import"));
  make_dirs(parent_folder(out));
  write_file_atomic(out, lines);
  return {{"imported", n}, {"skipped_unsplittable", skipped}, {"out", out}};
}

}  // namespace emovlm
