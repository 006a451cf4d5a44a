// One writer per output: a command holds an exclusive lock on its --out for its whole run, so a
// second command writing the same cache, run folder or report refuses at once, naming the holder.
#pragma once

#include <string>

namespace emovlm {

// What this process is doing, as the lock file records it for a refused second writer
// ("emovlm extract --split test ..."); main sets it from the command line.
void set_process_description(const std::string& description);
const std::string& process_description();

class OutputLock {
 public:
  // Locks output `out`: a directory output (a cache, a training run) through OUT/.emovlm.lock
  // (creating OUT), a file output (a report, a JSONL) through OUT.lock next to it. Throws Error
  // naming the holder's pid and command when another process holds it. Stale temporary files of
  // atomic writes left by a killed writer (".NAME.tmp.XXXXXX") are removed once the lock is held.
  // A folder the lock created is removed again on release if nothing but the lock was written
  // into it (a command that failed before its first output leaves no empty output behind).
  enum class Kind { Directory, File };
  OutputLock(const std::string& out, Kind kind);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  const std::string& lock_path() const { return lock_path_; }

 private:
  std::string out_;
  std::string lock_path_;
  int fd_ = -1;
  bool remove_on_release_ = false;
  bool created_folder_ = false;
};

// Removes the temporary files of atomic writes (".NAME.tmp.XXXXXX") in `dir`; only `name`'s when
// given. Returns how many. Call only while holding the lock of the output they belong to.
int remove_stale_temporaries(const std::string& dir, const std::string& name = "");

}  // namespace emovlm
