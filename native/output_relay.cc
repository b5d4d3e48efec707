#include "output_relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace hotmem {

namespace {

constexpr size_t kReadBytes = 64 * 1024;

class RelayedFile {
 public:
  RelayedFile(const RelayedStream& stream, uint64_t limit_bytes)
      : stream_(stream), limit_bytes_(limit_bytes) {}

  ~RelayedFile() {
    if (fd_ >= 0) close(fd_);
  }

  RelayedFile(const RelayedFile&) = delete;
  RelayedFile& operator=(const RelayedFile&) = delete;

  // The agent created the file; what an earlier writer left in it counts against the limit.
  int Open() {
    fd_ = open(stream_.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd_ < 0) return -1;
    struct stat st;
    if (fstat(fd_, &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
    return 0;
  }

  void Append(const char* data, size_t length) {
    while (length > 0) {
      if (size_ >= limit_bytes_) Replace();
      size_t room = static_cast<size_t>(std::min<uint64_t>(limit_bytes_ - size_, length));
      Write(data, room);
      data += room;
      length -= room;
    }
  }

 private:
  // Counts the bytes as stored whether or not the write succeeded: a failing file must still
  // reach its limit and be replaced, and what it lost is in the next marker's count.
  void Write(const char* data, size_t length) {
    size_ += length;
    while (length > 0) {
      ssize_t written = write(fd_, data, length);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) return;
      data += written;
      length -= static_cast<size_t>(written);
    }
  }

  // A new file that starts with the marker, renamed over the full one. If it cannot be created
  // the full one is emptied in place instead: still bounded, but a reader may miss the switch.
  void Replace() {
    dropped_ += size_ - marker_bytes_;
    char marker[kMaxMarkerBytes];
    int length = std::snprintf(
        marker, sizeof(marker),
        "[hotmem: %s reached %llu bytes; the %llu bytes before this line were dropped from its "
        "file (%llu bytes of output dropped so far)]\n",
        stream_.name.c_str(),
        static_cast<unsigned long long>(limit_bytes_), static_cast<unsigned long long>(size_),
        static_cast<unsigned long long>(dropped_));
    length = std::min(length, static_cast<int>(sizeof(marker)) - 1);
    std::string next = stream_.path + ".next";
    int fd = open(next.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && rename(next.c_str(), stream_.path.c_str()) == 0) {
      close(fd_);
      fd_ = fd;
    } else {
      if (fd >= 0) close(fd);
      while (ftruncate(fd_, 0) < 0 && errno == EINTR) {
      }
    }
    size_ = 0;
    marker_bytes_ = static_cast<uint64_t>(length);
    Write(marker, marker_bytes_);
  }

  RelayedStream stream_;
  uint64_t limit_bytes_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t marker_bytes_ = 0;  // of size_: the marker line the file starts with
  uint64_t dropped_ = 0;       // output only, markers not counted
};

}  // namespace

int RelayOutput(RelayedStream (&streams)[2], uint64_t limit_bytes) {
  RelayedFile files[2] = {{streams[0], limit_bytes}, {streams[1], limit_bytes}};
  for (RelayedFile& file : files) {
    if (file.Open() < 0) return -1;
  }
  struct pollfd polled[2] = {{streams[0].pipe_fd, POLLIN, 0}, {streams[1].pipe_fd, POLLIN, 0}};
  static char buffer[kReadBytes];
  int open_pipes = 2;
  while (open_pipes > 0) {
    if (poll(polled, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    for (int i = 0; i < 2; i++) {
      if (polled[i].fd < 0 || polled[i].revents == 0) continue;
      ssize_t got = read(polled[i].fd, buffer, sizeof(buffer));
      if (got < 0 && errno == EINTR) continue;
      if (got > 0) {
        files[i].Append(buffer, static_cast<size_t>(got));
        continue;
      }
      // EOF: every write end is closed (or the pipe failed, which no write end can fix).
      close(polled[i].fd);
      polled[i].fd = -1;
      open_pipes--;
    }
  }
  return 0;
}

}  // namespace hotmem
