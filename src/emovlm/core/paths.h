// The one rule for paths that the project's files store: a path is stored relative to the folder
// of the file that stores it (absolute only when the user gave an absolute path outside that
// folder), and every reader resolves it against that same folder. Moving or copying a whole run
// folder (instructions, caches, journals, bundles, reports) then keeps every path in it valid.
#pragma once

#include <string>

namespace emovlm {

// `path` as this process names it (relative to the working directory, or absolute), written as
// the file `storing_file` stores it: relative to that file's folder, lexically normalized ("a/./b"
// and "a/b" store the same), unless `path` is absolute and outside that folder.
std::string store_path(const std::string& path, const std::string& storing_file);

// A path read from `storing_file`, as this process names it: absolute paths as they are,
// relative ones joined to the storing file's folder (lexically normalized).
std::string resolve_stored_path(const std::string& stored, const std::string& storing_file);

// The identity of a path for comparisons (resuming, "is this the same image"): absolute, with
// symlinks, "." and ".." resolved as far as the path exists. Spellings of one file compare equal.
std::string path_identity(const std::string& path);

// The folder of `file` ("." for a bare name).
std::string parent_folder(const std::string& file);

}  // namespace emovlm
