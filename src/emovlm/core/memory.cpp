// Resident-set figures from /proc and malloc_trim.
#include "emovlm/core/memory.h"

#include <cstdio>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace emovlm {

namespace {

// A "Key:   N kB" line of /proc/self/status, in GiB; -1 when absent.
double status_field_gib(const char* key) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  const size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, n) == 0 && line[n] == ':' &&
        std::sscanf(line + n + 1, " %ld", &kib) == 1)
      break;
  std::fclose(f);
  return kib < 0 ? -1 : kib / (1024.0 * 1024.0);
}

}  // namespace

double resident_gib() {
  return status_field_gib("VmRSS");
}

double peak_resident_gib() {
  return status_field_gib("VmHWM");
}

void reset_peak_resident() {
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

bool release_free_heap() {
#if defined(__GLIBC__)
  return malloc_trim(0) != 0;
#else
  return false;
#endif
}

}  // namespace emovlm
