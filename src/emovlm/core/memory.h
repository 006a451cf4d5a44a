// The process's memory as the operating system sees it (Linux /proc), and handing freed heap
// memory back. Used by the benchmarks' memory figures and after large transient allocations
// (NF4 quantization frees a bf16 copy of every weight it converts).
#pragma once

namespace emovlm {

// Resident set size now (VmRSS), in GiB; -1 when /proc/self/status cannot be read.
double resident_gib();
// Peak resident set size since start or the last reset_peak_resident() (VmHWM), in GiB.
double peak_resident_gib();
// Starts a new peak window (writes 5 to /proc/self/clear_refs); a no-op where unsupported.
void reset_peak_resident();
// Returns the heap's free memory to the operating system (glibc's malloc_trim). glibc keeps
// freed chunks below its mmap threshold (up to 32 MB) in the heap, so freeing many mid-sized
// tensors leaves the resident set high until this runs. Returns whether memory was released.
bool release_free_heap();

}  // namespace emovlm
