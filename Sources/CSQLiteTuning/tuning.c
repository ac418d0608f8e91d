#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "CSQLiteTuning.h"

int sb_sqlite_memstatus_off(void) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

int sb_pairs_append(sb_pairs *pairs, const char *first, int first_length, const char *second, int second_length) {
  if (first_length < 0 || second_length < 0) return SQLITE_MISUSE;
  if (pairs->count == pairs->pair_capacity) {
    int capacity = pairs->pair_capacity < 256 ? 256 : pairs->pair_capacity * 2;
    size_t *ends = realloc(pairs->ends, sizeof(size_t) * 2 * (size_t)capacity);
    if (ends == NULL) return SQLITE_NOMEM;
    pairs->ends = ends;
    pairs->pair_capacity = capacity;
  }
  size_t needed = pairs->used + (size_t)first_length + (size_t)second_length;
  // Always a buffer, even for empty texts: a null pointer would bind NULL rather than ''.
  if (needed > pairs->capacity || pairs->bytes == NULL) {
    size_t capacity = pairs->capacity < 16384 ? 16384 : pairs->capacity;
    while (capacity < needed) capacity *= 2;
    char *bytes = realloc(pairs->bytes, capacity);
    if (bytes == NULL) return SQLITE_NOMEM;
    pairs->bytes = bytes;
    pairs->capacity = capacity;
  }
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

int sb_pairs_insert(void *insert, const sb_pairs *pairs, int from, int to) {
  sqlite3_stmt *statement = insert;
  int code = SQLITE_DONE;
  for (int i = from; i < to && code == SQLITE_DONE; i++) {
    size_t start = i == 0 ? 0 : pairs->ends[2 * i - 1], middle = pairs->ends[2 * i], end = pairs->ends[2 * i + 1];
    sqlite3_reset(statement);
    code = sqlite3_bind_text(statement, 1, pairs->bytes + start, (int)(middle - start), SQLITE_STATIC);
    if (code == SQLITE_OK) code = sqlite3_bind_text(statement, 2, pairs->bytes + middle, (int)(end - middle), SQLITE_STATIC);
    if (code == SQLITE_OK) code = sqlite3_step(statement);
  }
  sqlite3_reset(statement);
  // The bindings point into `pairs`, which the caller may free next.
  sqlite3_clear_bindings(statement);
  return code;
}

void sb_pairs_free(sb_pairs *pairs) {
  free(pairs->bytes);
  free(pairs->ends);
  *pairs = (sb_pairs){0};
}
