// Resident-set figures and handing freed heap memory back.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "emovlm/core/memory.h"

using namespace emovlm;

TEST(Memory, PeakFollowsTouchedMemory) {
  const double before = resident_gib();
  ASSERT_GT(before, 0.0);
  reset_peak_resident();
  const size_t bytes = size_t{256} << 20;
  char* p = static_cast<char*>(std::malloc(bytes));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, bytes);  // resident only once written
  EXPECT_GT(resident_gib(), before + 0.2);
  std::free(p);
  EXPECT_GT(peak_resident_gib(), before + 0.2);
}

#if defined(__GLIBC__)
TEST(Memory, ReleaseFreeHeapReturnsFreedChunks) {
  // 16 KiB chunks come from the heap (below glibc's mmap threshold); every 64th stays allocated,
  // as long-lived tensors among freed temporaries do, so free() cannot give the holes back
  std::vector<char*> chunks;
  for (int i = 0; i < 16384; ++i) {
    chunks.push_back(static_cast<char*>(std::malloc(16 << 10)));
    std::memset(chunks.back(), 1, 16 << 10);
  }
  for (size_t i = 0; i < chunks.size(); ++i)
    if (i % 64 != 63) std::free(chunks[i]);
  const double freed = resident_gib();
  EXPECT_TRUE(release_free_heap());
  EXPECT_LT(resident_gib(), freed - 0.15);  // 252 MiB were free between the kept chunks
  for (size_t i = 63; i < chunks.size(); i += 64) std::free(chunks[i]);
}
#endif
