// Tokenizer speed on one thread with the real Qwen2-VL vocabulary: MB/s by kind of text (in
// documents of about 4 KB, one encode() call each), single pieces of 1k..64k characters, and the
// load time of tokenizer.json; the same documents can be written out for the reference's timing
// (bench/tokenizer_reference.js; both in one run: bench/tokenizer_vs_reference.sh).
//   bench_text [--tokenizer FILE] [--mb N] [--reps N] [--write DIR]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/text/tokenizer.h"

using namespace emovlm;

namespace {

// CPU seconds of the process (the machine is shared: time spent waiting for a core is not counted).
double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double seconds_of(const std::function<void()>& fn) {
  const double t0 = cpu_now();
  fn();
  return cpu_now() - t0;
}

double median_seconds(const std::function<void()>& fn, int reps) {
  fn();  // warm-up: both tokenizers cache the pieces they have seen
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(seconds_of(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    const int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? b : len == 2 ? b & 0x1F : len == 3 ? b & 0x0F : b & 0x07;
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

// Words of one kind: the vocabulary's tokens (decoded) whose characters all pass `keep`, in id
// order, which is roughly the order of frequency in the text the merges were learnt from.
std::vector<std::string> vocab_words(const Tokenizer& tok,
                                     const std::function<bool(uint32_t)>& keep, size_t min_chars,
                                     bool leading_space) {
  std::vector<std::string> out;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.is_special(id)) continue;
    std::string w = tok.decode({id});
    if (w.find("\xEF\xBF\xBD") != std::string::npos) continue;  // part of a character
    if (leading_space) {
      if (w.size() < 2 || w[0] != ' ') continue;
      w.erase(0, 1);
    }
    const auto cps = code_points(w);
    if (cps.size() < min_chars || !std::all_of(cps.begin(), cps.end(), keep)) continue;
    out.push_back(w);
  }
  if (out.empty()) throw Error("the vocabulary has no words of a kind the benchmark needs");
  return out;
}

// Draws words with a Zipf-like law over their order (index ~ exp(u ln n)).
struct Zipf {
  const std::vector<std::string>& words;
  std::mt19937_64& rng;
  const std::string& operator()() {
    std::uniform_real_distribution<double> u(0, 1);
    size_t i = static_cast<size_t>(std::exp(u(rng) * std::log(double(words.size())))) - 1;
    return words[std::min(i, words.size() - 1)];
  }
};

bool in(uint32_t c, uint32_t lo, uint32_t hi) {
  return c >= lo && c <= hi;
}
bool han(uint32_t c) {
  return in(c, 0x4E00, 0x9FFF) || in(c, 0x3400, 0x4DBF);
}
bool kana(uint32_t c) {
  return in(c, 0x3041, 0x30FF);
}

struct Text {
  std::string name;
  std::vector<std::string> docs;
  size_t bytes() const {
    size_t n = 0;
    for (const auto& d : docs) n += d.size();
    return n;
  }
};

// Cuts a text into documents of about `size` bytes, at a space or newline when one comes within
// 256 bytes, else at a character boundary.
std::vector<std::string> documents(const std::string& text, size_t size) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.size(), start + size);
    size_t k = end;
    while (k < text.size() && k < end + 256 && text[k] != ' ' && text[k] != '\n') ++k;
    end = k < text.size() && k < end + 256 ? k : end;
    while (end < text.size() && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) ++end;
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

// Text of `bytes` bytes: words joined by `sep()`, a punctuation mark now and then.
std::string prose(size_t bytes, std::mt19937_64& rng, const std::function<std::string()>& word,
                  const std::function<std::string()>& sep, const std::vector<std::string>& punct) {
  std::string s;
  while (s.size() < bytes) {
    s += word();
    const auto r = rng() % 100;
    if (r < 8) s += punct[rng() % punct.size()];
    if (r == 8) s += "\n\n";
    s += sep();
  }
  return s;
}

std::vector<Text> texts(const Tokenizer& tok, size_t bytes) {
  std::mt19937_64 rng(20261130);
  std::vector<Text> out;
  const size_t doc = 4000;
  auto none = [] { return std::string(); };
  auto space = [] { return std::string(" "); };
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return in(c, 'a', 'z') || in(c, 'A', 'Z'); }, 1, true);
    Zipf z{words, rng};
    out.push_back({"english", documents(prose(bytes, rng, z, space,
                                              {",", ".", ";", ":", "!", "?", "'s", " -", "'t"}),
                                        doc)});
  }
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return in(c, 'a', 'z'); }, 2, true);
    Zipf z{words, rng};
    const char* kw[] = {"int",    "const", "auto", "return",
                        "for",    "if",    "else", "std::vector<float>",
                        "size_t", "def",   "self"};
    const char* ops[] = {" = ", " + ", " * ", " == ", " < ",  "->",  ".",
                         "(",   ")",   ", ",  "[i]",  " && ", " += "};
    std::string s;
    int depth = 1;
    while (s.size() < bytes) {
      s += std::string(2 * depth, ' ') + kw[rng() % 11] + " " + z() + "_" + z();
      for (int k = rng() % 5; k > 0; --k)
        s += std::string(ops[rng() % 13]) + (rng() % 3 ? z() : std::to_string(rng() % 1000));
      const auto r = rng() % 10;
      s += r < 2 ? " {\n" : r < 4 ? ";  // " + z() + " " + z() + "\n" : ";\n";
      depth = std::clamp(depth + (r < 2 ? 1 : r == 9 ? -1 : 0), 1, 6);
      if (r == 9) s += std::string(2 * depth, ' ') + "}\n";
    }
    out.push_back({"code", documents(s, doc)});
  }
  {
    auto words = vocab_words(tok, han, 1, false);
    Zipf z{words, rng};
    out.push_back({"chinese", documents(prose(bytes, rng, z, none,
                                              {"，", "。", "、", "；", "：", "？", "“", "”"}),
                                        doc)});
  }
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return han(c) || kana(c); }, 1, false);
    Zipf z{words, rng};
    out.push_back(
        {"japanese", documents(prose(bytes, rng, z, none, {"、", "。", "「", "」", "・"}), doc)});
  }
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return in(c, 0xAC00, 0xD7A3); }, 1, false);
    Zipf z{words, rng};
    auto word = [&] { return z() + (rng() % 2 ? z() : std::string()); };
    out.push_back({"korean", documents(prose(bytes, rng, word, space, {".", ",", "?"}), doc)});
  }
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return in(c, 0x0E01, 0x0E5B); }, 1, false);
    Zipf z{words, rng};
    auto sep = [&] { return rng() % 6 ? std::string() : std::string(" "); };
    out.push_back({"thai", documents(prose(bytes, rng, z, sep, {"ๆ", " "}), doc)});
  }
  {
    auto words = vocab_words(
        tok, [](uint32_t c) { return in(c, 0x0621, 0x064A); }, 2, true);
    Zipf z{words, rng};
    out.push_back({"arabic", documents(prose(bytes, rng, z, space, {"،", ".", "؟", ":"}), doc)});
  }
  {
    std::string s;
    const char* seps[] = {" ", ", ", ".", "\n", " - ", "/", ":"};
    while (s.size() < bytes)
      s += std::to_string(rng() % 100000000 / (1 + rng() % 10000)) + seps[rng() % 7];
    out.push_back({"digits", documents(s, doc)});
  }
  {
    std::string s;
    while (s.size() < bytes) {
      const uint32_t c = static_cast<uint32_t>(rng() % 0x20000);
      if (c < 0xD800 || c > 0xDFFF) append_utf8(c, s);
    }
    out.push_back({"random code points (U+0000-U+1FFFF)", documents(s, doc)});
  }
  return out;
}

// One piece of n characters: Latin letters (one word) or Chinese characters (no space, no
// punctuation).
std::string single_piece(size_t n, bool chinese, std::mt19937_64& rng) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (chinese)
      append_utf8(0x4E00 + static_cast<uint32_t>(rng() % 0x5000), s);
    else
      s.push_back(static_cast<char>('a' + rng() % 26));
  }
  return s;
}

std::string fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids) h = (h ^ static_cast<uint64_t>(id)) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = EMOVLM_BENCH_TOKENIZER_FILE, write_dir;
  double mb = 1.0;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tokenizer")
      path = argv[i + 1];
    else if (a == "--mb")
      mb = std::stod(argv[i + 1]);
    else if (a == "--reps")
      reps = std::stoi(argv[i + 1]);
    else if (a == "--write")
      write_dir = argv[i + 1];
    else {
      std::fprintf(stderr,
                   "usage: bench_text [--tokenizer FILE] [--mb N] [--reps N] [--write DIR]\n");
      return 2;
    }
  }
  try {
    std::vector<double> loads;
    Tokenizer tok = Tokenizer::from_file(path);
    for (int i = 0; i < 3; ++i)
      loads.push_back(seconds_of([&] { tok = Tokenizer::from_file(path); }));
    std::sort(loads.begin(), loads.end());

    std::vector<Text> all = texts(tok, static_cast<size_t>(mb * 1e6));
    // single pieces: 64,000 characters in all for each length, as distinct pieces of that length
    std::mt19937_64 rng(7);
    for (bool chinese : {false, true}) {
      for (size_t n = 1000; n <= 64000; n *= 2) {
        Text t{std::string("one piece: ") + std::to_string(n) +
                   (chinese ? " Chinese characters" : " letters"),
               {}};
        for (size_t k = 0; k < 64000 / n; ++k) t.docs.push_back(single_piece(n, chinese, rng));
        all.push_back(t);
      }
    }

    if (!write_dir.empty()) {
      std::filesystem::create_directories(write_dir);
      json manifest = json::array();
      for (size_t i = 0; i < all.size(); ++i) {
        const std::string file = std::to_string(i) + ".json";
        std::ofstream(write_dir + "/" + file, std::ios::binary) << json(all[i].docs).dump() << "\n";
        manifest.push_back({{"name", all[i].name}, {"file", file}});
      }
      std::ofstream(write_dir + "/manifest.json") << manifest.dump(1) << "\n";
      std::printf("wrote %zu texts to %s\n", all.size(), write_dir.c_str());
      return 0;
    }

    std::printf("emovlm tokenizer, one thread, CPU time, median of %d after a warm-up: %s\n", reps,
                path.c_str());
    std::printf("load tokenizer.json: %.3f s (median of 3)\n", loads[1]);
    std::printf("%-42s %5s %10s %11s %8s  %s\n", "text", "docs", "bytes", "s per doc", "MB/s",
                "ids (count, hash)");
    for (const Text& t : all) {
      std::vector<int32_t> ids;
      const double s = median_seconds(
          [&] {
            ids.clear();
            for (const auto& d : t.docs) {
              const auto part = tok.encode(d);
              ids.insert(ids.end(), part.begin(), part.end());
            }
          },
          reps);
      std::printf("%-42s %5zu %10zu %11.7f %8.2f  %zu %s\n", t.name.c_str(), t.docs.size(),
                  t.bytes(), s / t.docs.size(), t.bytes() / s / 1e6, ids.size(),
                  fnv1a64(ids).c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_text: %s\n", e.what());
    return 1;
  }
  return 0;
}
