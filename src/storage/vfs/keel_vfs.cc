#include "storage/vfs/keel_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <span>
#include <unordered_map>
#include <utility>

namespace keel::storage {

PageStorePageSource::PageStorePageSource(PageStore& store, Bytes actor,
                                         std::optional<uint64_t> generation)
    : store_(store), actor_(std::move(actor)), generation_(generation) {}

Result<std::vector<Page>> PageStorePageSource::GetPages(const std::vector<uint32_t>& pgnos) {
  auto pages = store_.GetPages(actor_, pgnos, generation_);
  if (!pages.has_value() && !pages.error().Is(kSqliteErrorGroup, kSqliteNotFound)) {
    failure_ = pages.error();
  }
  return pages;
}

Status PageStorePageSource::Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                                   int64_t now_ms) {
  CommitRequest request;
  request.dirty_pages = std::move(dirty_pages);
  request.db_size_pages = db_size_pages;
  request.now_ms = now_ms;
  request.expected_generation = generation_;
  auto outcome = store_.Commit(actor_, request);
  if (!outcome.has_value()) {
    failure_ = outcome.error();
    return Unexpected{std::move(outcome).error()};
  }
  return OkStatus();
}

namespace {

constexpr size_t kPageSize = kSqlitePageSize;
constexpr int kDeviceCharacteristics = SQLITE_IOCAP_ATOMIC4K | SQLITE_IOCAP_SAFE_APPEND |
                                       SQLITE_IOCAP_SEQUENTIAL | SQLITE_IOCAP_POWERSAFE_OVERWRITE;
// Julian day number of the Unix epoch, in milliseconds (as os_unix.c).
constexpr int64_t kUnixEpochJulianMs = 210866760000000LL;

const Bytes& ZeroPage() {
  static const Bytes* zero = new Bytes(kPageSize, 0);
  return *zero;
}

Error VfsError(std::string message) { return SqliteError("vfs", std::move(message)); }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Committed pages, least recently used evicted first.
class PageCache {
 public:
  explicit PageCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  const Bytes* Get(uint32_t pgno) {
    auto it = map_.find(pgno);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.second);
    return &it->second.first;
  }
  bool Contains(uint32_t pgno) const { return map_.count(pgno) != 0; }
  size_t size() const { return map_.size(); }
  size_t capacity() const { return capacity_; }
  const Bytes* Put(uint32_t pgno, Bytes bytes) {
    auto it = map_.find(pgno);
    if (it != map_.end()) {
      it->second.first = std::move(bytes);
      order_.splice(order_.begin(), order_, it->second.second);
      return &it->second.first;
    }
    while (map_.size() >= capacity_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(pgno);
    auto [pos, inserted] = map_.emplace(pgno, std::make_pair(std::move(bytes), order_.begin()));
    (void)inserted;
    return &pos->second.first;
  }
  void Erase(uint32_t pgno) {
    auto it = map_.find(pgno);
    if (it == map_.end()) return;
    order_.erase(it->second.second);
    map_.erase(it);
  }
  void EraseAbove(uint32_t pgno) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (it->first > pgno) {
        order_.erase(it->second.second);
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
  }
  void Clear() {
    map_.clear();
    order_.clear();
  }

 private:
  size_t capacity_;
  std::list<uint32_t> order_;  // front = most recently used
  std::unordered_map<uint32_t, std::pair<Bytes, std::list<uint32_t>::iterator>> map_;
};

class DbFile;

}  // namespace

struct KeelVfs::Impl {
  struct Entry {
    std::shared_ptr<PageSource> source;
    bool open = false;
    DbFile* file = nullptr;  // the open handle (FullyCached, Prefetch)
  };

  Impl(std::string n, Clock& c, Random& r, KeelVfsOptions o)
      : name(std::move(n)), clock(c), random(r), options(o) {}

  std::string name;
  Clock& clock;
  Random& random;
  KeelVfsOptions options;
  sqlite3_vfs vfs{};
  bool registered = false;

  mutable std::mutex mu;
  std::map<std::string, Entry, std::less<>> dbs;  // guarded by mu
  size_t open_files = 0;                          // guarded by mu
};

namespace {

using Impl = KeelVfs::Impl;

// An in-memory file: journals, temp databases, statement journals.
class MemFile {
 public:
  int Read(void* out, int amount, sqlite3_int64 offset) {
    auto* dst = static_cast<uint8_t*>(out);
    size_t n = static_cast<size_t>(amount);
    size_t off = static_cast<size_t>(offset);
    size_t have = off < data_.size() ? std::min(n, data_.size() - off) : 0;
    if (have > 0) std::memcpy(dst, data_.data() + off, have);
    if (have < n) {
      std::memset(dst + have, 0, n - have);
      return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
  }
  int Write(const void* in, int amount, sqlite3_int64 offset) {
    size_t off = static_cast<size_t>(offset);
    size_t n = static_cast<size_t>(amount);
    if (data_.size() < off + n) data_.resize(off + n, 0);
    std::memcpy(data_.data() + off, in, n);
    return SQLITE_OK;
  }
  int Truncate(sqlite3_int64 size) {
    data_.resize(static_cast<size_t>(size), 0);
    return SQLITE_OK;
  }
  sqlite3_int64 Size() const { return static_cast<sqlite3_int64>(data_.size()); }

 private:
  Bytes data_;
};

// The main database file of one attached name.
class DbFile {
 public:
  DbFile(Impl& vfs, std::string name, std::shared_ptr<PageSource> source)
      : vfs_(vfs),
        name_(std::move(name)),
        source_(std::move(source)),
        cache_(vfs.options.cache_pages) {}

  const std::string& name() const { return name_; }

  // True when no read of this handle can reach the PageSource: every committed page is in
  // the cache (cache keys are always within 1..committed_, see GetPage and Flush), or
  // dirty, or reads as zeros.
  bool FullyCached() const { return !dead_ && cache_.size() >= committed_; }

  // Loads every committed page not cached or dirty, `batch` pages per GetPages, when the
  // whole database fits in the cache; false when it does not (nothing fetched).
  Result<bool> Prefetch(size_t batch) {
    if (dead_) return VfsError("prefetch: the handle is dead");
    if (committed_ > cache_.capacity()) return false;
    std::vector<uint32_t> missing;
    for (uint32_t p = 1; p <= std::min(committed_, zero_above_); ++p) {
      if (!cache_.Contains(p) && dirty_.count(p) == 0) missing.push_back(p);
    }
    for (size_t i = 0; i < missing.size(); i += batch) {
      std::vector<uint32_t> pgnos(missing.begin() + static_cast<std::ptrdiff_t>(i),
                                  missing.begin() + static_cast<std::ptrdiff_t>(
                                                        std::min(missing.size(), i + batch)));
      auto pages = source_->GetPages(pgnos);
      if (!pages.has_value()) return Unexpected{std::move(pages).error()};
      if (pages->size() != pgnos.size()) return VfsError("get_pages returned the wrong count");
      for (size_t j = 0; j < pgnos.size(); ++j) {
        Page& page = (*pages)[j];
        if (page.pgno != pgnos[j]) return VfsError("get_pages returned the wrong pages");
        Bytes bytes = page.bytes.has_value() ? std::move(*page.bytes) : ZeroPage();
        if (bytes.size() != kPageSize) return VfsError("get_pages returned a short page");
        cache_.Put(page.pgno, std::move(bytes));
      }
    }
    return true;
  }

  // Reads the committed size. Errors fail the open.
  Status Load() {
    auto size = ReadCommittedSize();
    if (!size.has_value()) return Unexpected{std::move(size).error()};
    committed_ = pending_ = zero_above_ = *size;
    return OkStatus();
  }

  int Read(void* out, int amount, sqlite3_int64 offset) {
    if (dead_) return SQLITE_IOERR_READ;
    auto* dst = static_cast<uint8_t*>(out);
    uint64_t pos = static_cast<uint64_t>(offset);
    uint64_t end = pos + static_cast<uint64_t>(amount);
    uint64_t file_size = static_cast<uint64_t>(pending_) * kPageSize;
    while (pos < end) {
      if (pos >= file_size) {
        std::memset(dst, 0, end - pos);
        return SQLITE_IOERR_SHORT_READ;
      }
      uint32_t pgno = static_cast<uint32_t>(pos / kPageSize) + 1;
      size_t in_page = static_cast<size_t>(pos % kPageSize);
      size_t n = static_cast<size_t>(std::min<uint64_t>(kPageSize - in_page, end - pos));
      auto page = GetPage(pgno);
      if (!page.has_value()) return SQLITE_IOERR_READ;
      std::memcpy(dst, (*page)->data() + in_page, n);
      dst += n;
      pos += n;
    }
    return SQLITE_OK;
  }

  int Write(const void* in, int amount, sqlite3_int64 offset) {
    if (dead_) return SQLITE_IOERR_WRITE;
    const auto* src = static_cast<const uint8_t*>(in);
    uint64_t pos = static_cast<uint64_t>(offset);
    uint64_t end = pos + static_cast<uint64_t>(amount);
    // The page size is fixed: refuse a database header announcing another one.
    if (pos <= 16 && end >= 18) {
      const uint8_t* field = src + (16 - pos);
      if (field[0] != 0x10 || field[1] != 0x00) return SQLITE_IOERR_WRITE;
    }
    while (pos < end) {
      uint32_t pgno = static_cast<uint32_t>(pos / kPageSize) + 1;
      size_t in_page = static_cast<size_t>(pos % kPageSize);
      size_t n = static_cast<size_t>(std::min<uint64_t>(kPageSize - in_page, end - pos));
      if (n == kPageSize) {
        dirty_[pgno] = Bytes(src, src + kPageSize);
      } else {
        auto it = dirty_.find(pgno);
        if (it == dirty_.end()) {
          Bytes base = ZeroPage();
          if (pgno <= pending_) {
            auto page = GetPage(pgno);
            if (!page.has_value()) return SQLITE_IOERR_WRITE;
            base = **page;
          }
          it = dirty_.emplace(pgno, std::move(base)).first;
        }
        std::memcpy(it->second.data() + in_page, src, n);
      }
      pending_ = std::max(pending_, pgno);
      src += n;
      pos += n;
    }
    return SQLITE_OK;
  }

  int Truncate(sqlite3_int64 size) {
    if (dead_) return SQLITE_IOERR_TRUNCATE;
    uint64_t pages = (static_cast<uint64_t>(size) + kPageSize - 1) / kPageSize;
    if (pages > UINT32_MAX) return SQLITE_IOERR_TRUNCATE;
    uint32_t n = static_cast<uint32_t>(pages);
    dirty_.erase(dirty_.upper_bound(n), dirty_.end());
    pending_ = n;
    zero_above_ = std::min(zero_above_, n);
    return SQLITE_OK;
  }

  sqlite3_int64 Size() const {
    return static_cast<sqlite3_int64>(pending_) * static_cast<sqlite3_int64>(kPageSize);
  }

  // THE commit point (see the header): everything buffered since the last flush becomes
  // one PageSource::Commit.
  int Flush() {
    if (dead_) return SQLITE_IOERR_FSYNC;
    if (dirty_.empty() && pending_ == committed_ && zero_above_ == committed_) return SQLITE_OK;
    // SQLite shrinks the file only after the commit (pager_end_transaction truncates once
    // the journal is finalized), but the new size is already in the dirty page-1 header:
    // commit that size, so a shrinking transaction is still one commit.
    uint32_t new_size = pending_;
    if (auto header_size = DirtyHeaderSize(); header_size.has_value() && *header_size <= pending_) {
      new_size = *header_size;
    }
    std::vector<DirtyPage> pages;
    pages.reserve(dirty_.size());
    // Pages cut off by a truncation and then re-extended within this transaction read as
    // zeros now; the store must forget their old content too.
    for (uint32_t p = zero_above_ + 1; p <= std::min(committed_, new_size); ++p) {
      if (dirty_.count(p) == 0) pages.push_back({p, ZeroPage()});
    }
    for (const auto& [pgno, bytes] : dirty_) {
      if (pgno <= new_size) pages.push_back({pgno, bytes});
    }
    std::sort(pages.begin(), pages.end(),
              [](const DirtyPage& a, const DirtyPage& b) { return a.pgno < b.pgno; });
    Status committed = source_->Commit(std::move(pages), new_size, vfs_.clock.SystemNowMs());
    if (!committed.has_value()) {
      // Outcome unknown: forget everything and learn the size again.
      dirty_.clear();
      cache_.Clear();
      auto size = ReadCommittedSize();
      if (!size.has_value()) {
        dead_ = true;
      } else {
        committed_ = pending_ = zero_above_ = *size;
      }
      return SQLITE_IOERR_FSYNC;
    }
    cache_.EraseAbove(std::min(zero_above_, new_size));
    for (auto& [pgno, bytes] : dirty_) {
      if (pgno <= new_size) cache_.Put(pgno, std::move(bytes));
    }
    dirty_.clear();
    committed_ = zero_above_ = pending_ = new_size;
    cache_.EraseAbove(committed_);
    return SQLITE_OK;
  }

  // SQLITE_FCNTL_COMMIT_PHASETWO: sent after the post-commit truncation. The size the
  // truncation sets was already committed (Flush), so normally there is nothing to do; a
  // pure shrink left over (no valid size in the header) is committed on its own, which is
  // safe because the committed header already describes the smaller database.
  int CommitPhaseTwo() {
    if (dead_ || !dirty_.empty() || pending_ >= committed_) return SQLITE_NOTFOUND;
    int rc = Flush();
    return rc == SQLITE_OK ? SQLITE_NOTFOUND : rc;
  }

  // SQLITE_FCNTL_PRAGMA: azArg[0] error out, [1] name, [2] value or null.
  int Pragma(char** args) {
    if (args[1] == nullptr || args[2] == nullptr) return SQLITE_NOTFOUND;
    std::string pragma = Lower(args[1]);
    std::string value = Lower(args[2]);
    if (pragma == "page_size") {
      char* endp = nullptr;
      long v = std::strtol(value.c_str(), &endp, 10);
      if (endp == value.c_str() || *endp != '\0' || v != static_cast<long>(kPageSize)) {
        args[0] = sqlite3_mprintf("keel vfs: page_size is fixed at 4096");
        return SQLITE_ERROR;
      }
    } else if (pragma == "journal_mode") {
      if (value == "wal" || value == "off") {
        args[0] = sqlite3_mprintf("keel vfs: journal_mode=%s is not supported", value.c_str());
        return SQLITE_ERROR;
      }
    }
    return SQLITE_NOTFOUND;
  }

 private:
  // The size recorded in page 1's header; 0 for a database never committed.
  Result<uint32_t> ReadCommittedSize() {
    auto pages = source_->GetPages({1});
    if (!pages.has_value()) {
      if (pages.error().Is(kSqliteErrorGroup, kSqliteNotFound)) return uint32_t{0};
      return Unexpected{std::move(pages).error()};
    }
    if (pages->size() != 1 || (*pages)[0].pgno != 1) {
      return VfsError("get_pages returned the wrong pages");
    }
    if (!(*pages)[0].bytes.has_value()) return uint32_t{0};
    Bytes& page1 = *(*pages)[0].bytes;
    if (page1.size() != kPageSize) return VfsError("page 1 has the wrong length");
    static constexpr char kMagic[] = "SQLite format 3";  // 16 bytes with the NUL
    if (std::memcmp(page1.data(), kMagic, sizeof(kMagic)) != 0) {
      return VfsError("page 1 is not a SQLite database header");
    }
    if (page1[16] != 0x10 || page1[17] != 0x00) {
      return VfsError("stored database does not use 4096-byte pages");
    }
    uint32_t size = (uint32_t{page1[28]} << 24) | (uint32_t{page1[29]} << 16) |
                    (uint32_t{page1[30]} << 8) | uint32_t{page1[31]};
    if (size == 0) size = 1;
    cache_.Put(1, std::move(page1));
    return size;
  }

  // The database size (in pages) in the header of the dirty page 1, when that header is
  // valid for this change counter (offset 24 == offset 92, as SQLite checks).
  std::optional<uint32_t> DirtyHeaderSize() const {
    auto it = dirty_.find(1);
    if (it == dirty_.end()) return std::nullopt;
    const Bytes& p = it->second;
    if (std::memcmp(p.data() + 24, p.data() + 92, 4) != 0) return std::nullopt;
    uint32_t size = (uint32_t{p[28]} << 24) | (uint32_t{p[29]} << 16) | (uint32_t{p[30]} << 8) |
                    uint32_t{p[31]};
    if (size == 0) return std::nullopt;
    return size;
  }

  // The current content of `pgno` (<= pending size) as this transaction sees it.
  Result<const Bytes*> GetPage(uint32_t pgno) {
    auto it = dirty_.find(pgno);
    if (it != dirty_.end()) return &it->second;
    if (pgno > zero_above_ || pgno > committed_) return &ZeroPage();
    if (const Bytes* cached = cache_.Get(pgno)) return cached;
    std::vector<uint32_t> pgnos;
    for (uint32_t p = pgno + 1;
         p <= std::min(committed_, zero_above_) && pgnos.size() < vfs_.options.read_ahead_pages;
         ++p) {
      if (cache_.Contains(p) || dirty_.count(p) != 0) break;
      pgnos.push_back(p);
    }
    pgnos.push_back(pgno);  // last, so it is the most recent entry in the cache
    auto pages = source_->GetPages(pgnos);
    if (!pages.has_value()) return Unexpected{std::move(pages).error()};
    if (pages->size() != pgnos.size()) return VfsError("get_pages returned the wrong count");
    const Bytes* result = nullptr;
    for (size_t i = 0; i < pgnos.size(); ++i) {
      Page& page = (*pages)[i];
      if (page.pgno != pgnos[i]) return VfsError("get_pages returned the wrong pages");
      Bytes bytes = page.bytes.has_value() ? std::move(*page.bytes) : ZeroPage();
      if (bytes.size() != kPageSize) return VfsError("get_pages returned a short page");
      result = cache_.Put(page.pgno, std::move(bytes));
    }
    return result;
  }

  Impl& vfs_;
  std::string name_;
  std::shared_ptr<PageSource> source_;
  PageCache cache_;
  std::map<uint32_t, Bytes> dirty_;  // this transaction's writes
  uint32_t committed_ = 0;           // size of the committed database, in pages
  uint32_t pending_ = 0;             // size as this transaction sees it
  // Committed pages above this were truncated away in this transaction (read as zeros).
  uint32_t zero_above_ = 0;
  bool dead_ = false;
};

// The sqlite3_file SQLite allocates (szOsFile) and hands to every io method.
struct VfsFile {
  sqlite3_file base;
  Impl* vfs;
  MemFile* mem;
  DbFile* db;
};

VfsFile* F(sqlite3_file* file) { return reinterpret_cast<VfsFile*>(file); }

// Nothing may unwind through SQLite's C frames: an allocation failure becomes `on_error`.
template <typename Fn>
int Guard(int on_error, Fn&& fn) {
  try {
    return fn();
  } catch (...) {
    return on_error;
  }
}
Impl* V(sqlite3_vfs* vfs) { return static_cast<Impl*>(vfs->pAppData); }

int FileClose(sqlite3_file* file) {
  VfsFile* f = F(file);
  std::lock_guard<std::mutex> lock(f->vfs->mu);
  if (f->db != nullptr) {
    auto it = f->vfs->dbs.find(f->db->name());
    if (it != f->vfs->dbs.end()) {
      it->second.open = false;
      it->second.file = nullptr;
    }
  }
  delete f->db;
  delete f->mem;
  f->db = nullptr;
  f->mem = nullptr;
  --f->vfs->open_files;
  return SQLITE_OK;
}

int FileRead(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
  VfsFile* f = F(file);
  return Guard(SQLITE_IOERR_NOMEM, [&] {
    return f->db != nullptr ? f->db->Read(out, amount, offset) : f->mem->Read(out, amount, offset);
  });
}
int FileWrite(sqlite3_file* file, const void* in, int amount, sqlite3_int64 offset) {
  VfsFile* f = F(file);
  return Guard(SQLITE_IOERR_NOMEM, [&] {
    return f->db != nullptr ? f->db->Write(in, amount, offset) : f->mem->Write(in, amount, offset);
  });
}
int FileTruncate(sqlite3_file* file, sqlite3_int64 size) {
  VfsFile* f = F(file);
  return Guard(SQLITE_IOERR_NOMEM,
               [&] { return f->db != nullptr ? f->db->Truncate(size) : f->mem->Truncate(size); });
}
int FileSync(sqlite3_file* file, int /*flags*/) {
  VfsFile* f = F(file);
  return Guard(SQLITE_IOERR_NOMEM, [&] { return f->db != nullptr ? f->db->Flush() : SQLITE_OK; });
}
int FileSize(sqlite3_file* file, sqlite3_int64* size) {
  VfsFile* f = F(file);
  *size = f->db != nullptr ? f->db->Size() : f->mem->Size();
  return SQLITE_OK;
}
int FileLock(sqlite3_file*, int) { return SQLITE_OK; }
int FileUnlock(sqlite3_file*, int) { return SQLITE_OK; }
int FileCheckReservedLock(sqlite3_file*, int* out) {
  *out = 0;
  return SQLITE_OK;
}
int DbFileControl(VfsFile* f, int op, void* arg);
int FileControl(sqlite3_file* file, int op, void* arg) {
  VfsFile* f = F(file);
  if (f->db == nullptr) return SQLITE_NOTFOUND;
  return Guard(SQLITE_IOERR_NOMEM, [&] { return DbFileControl(f, op, arg); });
}
int DbFileControl(VfsFile* f, int op, void* arg) {
  switch (op) {
    case SQLITE_FCNTL_SYNC:
      return f->db->Flush();
    case SQLITE_FCNTL_COMMIT_PHASETWO:
      return f->db->CommitPhaseTwo();
    case SQLITE_FCNTL_PRAGMA:
      return f->db->Pragma(static_cast<char**>(arg));
    case SQLITE_FCNTL_VFSNAME:
      *static_cast<char**>(arg) = sqlite3_mprintf("%s", f->vfs->name.c_str());
      return SQLITE_OK;
    default:
      return SQLITE_NOTFOUND;
  }
}
int FileSectorSize(sqlite3_file*) { return static_cast<int>(kPageSize); }
int FileDeviceCharacteristics(sqlite3_file*) { return kDeviceCharacteristics; }

const sqlite3_io_methods kIoMethods = {
    1,  // iVersion: no shared memory, no mmap
    FileClose,
    FileRead,
    FileWrite,
    FileTruncate,
    FileSync,
    FileSize,
    FileLock,
    FileUnlock,
    FileCheckReservedLock,
    FileControl,
    FileSectorSize,
    FileDeviceCharacteristics,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

int OpenFile(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  Impl* impl = V(vfs);
  VfsFile* f = F(file);
  f->base.pMethods = nullptr;  // SQLite must not call xClose when the open fails
  f->vfs = impl;
  f->mem = nullptr;
  f->db = nullptr;
  if ((flags & SQLITE_OPEN_WAL) != 0) return SQLITE_CANTOPEN;
  if ((flags & SQLITE_OPEN_MAIN_DB) != 0 && name != nullptr) {
    std::shared_ptr<PageSource> source;
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      auto it = impl->dbs.find(std::string_view(name));
      if (it == impl->dbs.end() || it->second.open) return SQLITE_CANTOPEN;
      it->second.open = true;
      source = it->second.source;
    }
    auto unmark = [&] {
      std::lock_guard<std::mutex> lock(impl->mu);
      auto it = impl->dbs.find(std::string_view(name));
      if (it != impl->dbs.end()) it->second.open = false;
    };
    std::unique_ptr<DbFile> db;
    bool loaded = false;
    try {
      db = std::make_unique<DbFile>(*impl, name, std::move(source));
      loaded = db->Load().has_value();
    } catch (...) {
      loaded = false;
    }
    if (!loaded) {
      unmark();
      return SQLITE_CANTOPEN;
    }
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      auto it = impl->dbs.find(std::string_view(name));
      if (it != impl->dbs.end()) it->second.file = db.get();
    }
    f->db = db.release();
  } else {
    f->mem = new MemFile();
  }
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    ++impl->open_files;
  }
  f->base.pMethods = &kIoMethods;
  if (out_flags != nullptr) *out_flags = flags;
  return SQLITE_OK;
}

int VfsOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  F(file)->base.pMethods = nullptr;
  return Guard(SQLITE_CANTOPEN, [&] { return OpenFile(vfs, name, file, flags, out_flags); });
}

int VfsDelete(sqlite3_vfs*, const char*, int) { return SQLITE_OK; }

int VfsAccess(sqlite3_vfs* vfs, const char* name, int /*flags*/, int* out) {
  Impl* impl = V(vfs);
  std::lock_guard<std::mutex> lock(impl->mu);
  *out = impl->dbs.count(std::string_view(name)) != 0 ? 1 : 0;
  return SQLITE_OK;
}

int VfsFullPathname(sqlite3_vfs*, const char* name, int out_size, char* out) {
  size_t n = std::strlen(name);
  if (out_size <= 0 || n + 1 > static_cast<size_t>(out_size)) return SQLITE_CANTOPEN;
  std::memcpy(out, name, n + 1);
  return SQLITE_OK;
}

void* VfsDlOpen(sqlite3_vfs*, const char*) { return nullptr; }
void VfsDlError(sqlite3_vfs*, int size, char* out) {
  if (size > 0) sqlite3_snprintf(size, out, "keel vfs: loadable extensions are not supported");
}
void (*VfsDlSym(sqlite3_vfs*, void*, const char*))(void) { return nullptr; }
void VfsDlClose(sqlite3_vfs*, void*) {}

int VfsRandomness(sqlite3_vfs* vfs, int size, char* out) {
  Impl* impl = V(vfs);
  if (size <= 0) return 0;
  std::lock_guard<std::mutex> lock(impl->mu);
  impl->random.Fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(out), static_cast<size_t>(size)));
  return size;
}

int VfsSleep(sqlite3_vfs*, int microseconds) { return microseconds; }

int VfsCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  *out = static_cast<sqlite3_int64>(V(vfs)->clock.SystemNowMs()) + kUnixEpochJulianMs;
  return SQLITE_OK;
}

int VfsCurrentTime(sqlite3_vfs* vfs, double* out) {
  sqlite3_int64 ms = 0;
  VfsCurrentTimeInt64(vfs, &ms);
  *out = static_cast<double>(ms) / 86400000.0;
  return SQLITE_OK;
}

int VfsGetLastError(sqlite3_vfs*, int, char*) { return 0; }

}  // namespace

KeelVfs::KeelVfs(std::string name, Clock& clock, Random& random, KeelVfsOptions options)
    : impl_(std::make_unique<Impl>(std::move(name), clock, random, options)) {
  sqlite3_vfs& v = impl_->vfs;
  v.iVersion = 2;
  v.szOsFile = static_cast<int>(sizeof(VfsFile));
  v.mxPathname = 512;
  v.pNext = nullptr;
  v.zName = impl_->name.c_str();
  v.pAppData = impl_.get();
  v.xOpen = VfsOpen;
  v.xDelete = VfsDelete;
  v.xAccess = VfsAccess;
  v.xFullPathname = VfsFullPathname;
  v.xDlOpen = VfsDlOpen;
  v.xDlError = VfsDlError;
  v.xDlSym = VfsDlSym;
  v.xDlClose = VfsDlClose;
  v.xRandomness = VfsRandomness;
  v.xSleep = VfsSleep;
  v.xCurrentTime = VfsCurrentTime;
  v.xGetLastError = VfsGetLastError;
  v.xCurrentTimeInt64 = VfsCurrentTimeInt64;
}

KeelVfs::~KeelVfs() {
  if (impl_->registered) sqlite3_vfs_unregister(&impl_->vfs);
}

const char* KeelVfs::name() const { return impl_->name.c_str(); }

Status KeelVfs::Register(bool make_default) {
  if (impl_->registered) return OkStatus();
  int rc = sqlite3_vfs_register(&impl_->vfs, make_default ? 1 : 0);
  if (rc != SQLITE_OK) {
    return VfsError(std::string("sqlite3_vfs_register: ") + sqlite3_errstr(rc));
  }
  impl_->registered = true;
  return OkStatus();
}

Status KeelVfs::Unregister() {
  if (!impl_->registered) return OkStatus();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->open_files != 0) return VfsError("unregister: files are still open");
  }
  int rc = sqlite3_vfs_unregister(&impl_->vfs);
  if (rc != SQLITE_OK) {
    return VfsError(std::string("sqlite3_vfs_unregister: ") + sqlite3_errstr(rc));
  }
  impl_->registered = false;
  return OkStatus();
}

Status KeelVfs::Attach(std::string db_name, std::shared_ptr<PageSource> source) {
  if (source == nullptr) return VfsError("attach: null page source");
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->dbs.count(db_name) != 0) return VfsError("attach: already attached: " + db_name);
  impl_->dbs.emplace(std::move(db_name), Impl::Entry{std::move(source), false});
  return OkStatus();
}

Status KeelVfs::Detach(std::string_view db_name) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->dbs.find(db_name);
  if (it == impl_->dbs.end()) return VfsError("detach: not attached: " + std::string(db_name));
  if (it->second.open) return VfsError("detach: database is open: " + std::string(db_name));
  impl_->dbs.erase(it);
  return OkStatus();
}

bool KeelVfs::FullyCached(std::string_view db_name) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->dbs.find(db_name);
  return it != impl_->dbs.end() && it->second.file != nullptr && it->second.file->FullyCached();
}

Result<bool> KeelVfs::Prefetch(std::string_view db_name, size_t batch_pages) {
  DbFile* file = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->dbs.find(db_name);
    if (it == impl_->dbs.end() || it->second.file == nullptr) {
      return VfsError("prefetch: not open: " + std::string(db_name));
    }
    file = it->second.file;
  }
  // The handle's own thread (the caller) is the only one using it; it stays open meanwhile.
  return file->Prefetch(std::max<size_t>(batch_pages, 1));
}

bool KeelVfs::IsOpen(std::string_view db_name) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->dbs.find(db_name);
  return it != impl_->dbs.end() && it->second.open;
}

}  // namespace keel::storage
