// The copy loop of hotmem-relay: an instance's stdout and stderr pipes into their files, each
// file kept within a byte limit by the relay, its only writer.
#ifndef HOTMEM_NATIVE_OUTPUT_RELAY_H_
#define HOTMEM_NATIVE_OUTPUT_RELAY_H_

#include <cstdint>
#include <string>

namespace hotmem {

struct RelayedStream {
  std::string name;  // "stdout", "stderr": named in the marker line
  std::string path;  // the file, replaced (renamed over) when it reaches the limit
  int pipe_fd;       // read end
};

// Copies both pipes into their files until every write end is closed. A file that would grow
// past limit_bytes is first filled to exactly limit_bytes, then replaced by a new file that
// starts with the line
//   [hotmem: stdout reached L bytes; the L bytes before this line were dropped from its file
//   (T bytes of output dropped so far)]
// (L counts the file's own marker line, T only the instance's output)
// so the file at path never exceeds limit_bytes. The full file may end in the middle of a line. The replacement is written under path + ".next"
// and renamed over path: a reader holding the old file reads it to its end, then reopens path.
// Output that cannot be stored (ENOSPC, EIO…) is dropped and counted, never left in the pipe:
// the instance must not block on a relay that cannot write. Returns 0 or -1 with errno set when
// a file could not be opened at the start.
int RelayOutput(RelayedStream (&streams)[2], uint64_t limit_bytes);

// The longest marker line, so that a limit can be checked to leave room for output after it.
constexpr uint64_t kMaxMarkerBytes = 160;

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_OUTPUT_RELAY_H_
