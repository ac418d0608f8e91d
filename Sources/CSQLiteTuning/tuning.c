#define _GNU_SOURCE  // qsort_r
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "CSQLiteTuning.h"

int sb_sqlite_memstatus_off(void) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

/// Grows an anonymous mapping (`*region` NULL: a new one) to hold at least `needed` bytes, doubling from 64 KiB.
/// Mappings rather than malloc: a merge's legs are a few MB, read on one thread and freed on another every few
/// seconds, and the allocator kept such blocks resident (mimalloc resets the pages of its per-thread heaps
/// rather than unmapping them), where munmap gives them back at once.
static int sb_grow(void **region, size_t *capacity, size_t needed) {
  if (*region != NULL && needed <= *capacity) return SQLITE_OK;
  size_t size = *capacity < 65536 ? 65536 : *capacity;
  while (size < needed) size *= 2;
  void *grown = *region == NULL ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                : mremap(*region, *capacity, size, MREMAP_MAYMOVE);
  if (grown == MAP_FAILED) return SQLITE_NOMEM;
  *region = grown;
  *capacity = size;
  return SQLITE_OK;
}

static void sb_unmap(void *region, size_t capacity) {
  if (region != NULL) munmap(region, capacity);
}

int sb_pairs_append(sb_pairs *pairs, const char *first, int first_length, const char *second, int second_length) {
  if (first_length < 0 || second_length < 0) return SQLITE_MISUSE;
  size_t ends = sizeof(size_t) * 2 * ((size_t)pairs->count + 1);
  size_t needed = pairs->used + (size_t)first_length + (size_t)second_length;
  // Always a buffer, even for empty texts: a null pointer would bind NULL rather than ''.
  if (sb_grow((void **)&pairs->ends, &pairs->ends_capacity, ends) != SQLITE_OK ||
      sb_grow((void **)&pairs->bytes, &pairs->capacity, needed) != SQLITE_OK)
    return SQLITE_NOMEM;
  // memcpy with a null source is undefined even for no bytes: an empty text may come as NULL.
  if (first_length > 0) memcpy(pairs->bytes + pairs->used, first, (size_t)first_length);
  pairs->used += (size_t)first_length;
  pairs->ends[2 * pairs->count] = pairs->used;
  if (second_length > 0) memcpy(pairs->bytes + pairs->used, second, (size_t)second_length);
  pairs->used += (size_t)second_length;
  pairs->ends[2 * pairs->count + 1] = pairs->used;
  pairs->count += 1;
  return SQLITE_OK;
}

int sb_pairs_collect(void *select, sb_pairs *pairs) {
  sqlite3_stmt *statement = select;
  int code;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    // The text first, then its length (SQLite's documented order: the conversion may change the length).
    const char *first = (const char *)sqlite3_column_text(statement, 0);
    int first_length = sqlite3_column_bytes(statement, 0);
    const char *second = (const char *)sqlite3_column_text(statement, 1);
    int second_length = sqlite3_column_bytes(statement, 1);
    code = sb_pairs_append(pairs, first, first_length, second, second_length);
    if (code != SQLITE_OK) break;
  }
  sqlite3_reset(statement);
  return code;
}

/// The bounds of pair i's first text (`which` 0) or second (1).
static void sb_pairs_text(const sb_pairs *pairs, int i, int which, const char **text, size_t *length) {
  size_t start = which == 1 ? pairs->ends[2 * i] : (i == 0 ? 0 : pairs->ends[2 * i - 1]);
  *text = pairs->bytes + start;
  *length = pairs->ends[2 * i + which] - start;
}

/// SQLite's BINARY collation: the bytes compared, then the lengths.
static int sb_compare_texts(const char *a, size_t a_length, const char *b, size_t b_length) {
  int order = memcmp(a, b, a_length < b_length ? a_length : b_length);
  if (order != 0) return order;
  return a_length < b_length ? -1 : a_length > b_length;
}

static int sb_compare_pairs(const void *left, const void *right, void *context) {
  const sb_pairs *pairs = context;
  int a = *(const int *)left, b = *(const int *)right;
  for (int which = 0; which < 2; which++) {
    const char *a_text, *b_text;
    size_t a_length, b_length;
    sb_pairs_text(pairs, a, which, &a_text, &a_length);
    sb_pairs_text(pairs, b, which, &b_text, &b_length);
    int order = sb_compare_texts(a_text, a_length, b_text, b_length);
    if (order != 0) return order;
  }
  return 0;
}

int sb_pairs_sort(sb_pairs *pairs) {
  if (sb_grow((void **)&pairs->order, &pairs->order_capacity, sizeof(int) * (size_t)pairs->count) != SQLITE_OK)
    return SQLITE_NOMEM;
  for (int i = 0; i < pairs->count; i++) pairs->order[i] = i;
  qsort_r(pairs->order, (size_t)pairs->count, sizeof(int), sb_compare_pairs, pairs);
  return SQLITE_OK;
}

int sb_pairs_run(void *each, void *checked, const char *last_deleted, int last_deleted_length,
                 const sb_pairs *pairs, int from, int to) {
  int code = SQLITE_DONE;
  for (int i = from; i < to && code == SQLITE_DONE; i++) {
    int pair = pairs->order != NULL ? pairs->order[i] : i;
    const char *first, *second;
    size_t first_length, second_length;
    sb_pairs_text(pairs, pair, 0, &first, &first_length);
    sb_pairs_text(pairs, pair, 1, &second, &second_length);
    // Only an id at or before the last one deleted can name a record that is gone.
    sqlite3_stmt *statement =
        checked != NULL && sb_compare_texts(second, second_length, last_deleted, (size_t)last_deleted_length) <= 0
            ? checked
            : each;
    sqlite3_reset(statement);
    code = sqlite3_bind_text(statement, 1, first, (int)first_length, SQLITE_STATIC);
    if (code == SQLITE_OK) code = sqlite3_bind_text(statement, 2, second, (int)second_length, SQLITE_STATIC);
    if (code == SQLITE_OK) code = sqlite3_step(statement);
  }
  // The bindings point into `pairs`, which the caller may free next.
  sqlite3_reset(each);
  sqlite3_clear_bindings(each);
  if (checked != NULL) {
    sqlite3_reset(checked);
    sqlite3_clear_bindings(checked);
  }
  return code;
}

void sb_pairs_free(sb_pairs *pairs) {
  sb_unmap(pairs->bytes, pairs->capacity);
  sb_unmap(pairs->ends, pairs->ends_capacity);
  sb_unmap(pairs->order, pairs->order_capacity);
  *pairs = (sb_pairs){0};
}
