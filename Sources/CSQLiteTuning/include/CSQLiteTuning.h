#ifndef SWITCHBOARD_CSQLITETUNING_H
#define SWITCHBOARD_CSQLITETUNING_H

#include <stddef.h>

/// Turns off SQLite's memory statistics for the whole process (`SQLITE_CONFIG_MEMSTATUS`), which otherwise
/// take a process-wide mutex around every allocation SQLite makes. sqlite3_config is variadic, so Swift
/// cannot call it itself. It only works before SQLite is first used in the process: returns SQLite's result
/// code (SQLITE_OK, or SQLITE_MISUSE when SQLite was already initialized and the statistics stay on).
int sb_sqlite_memstatus_off(void);

/// Pairs of texts packed in one buffer: the legs of a call-index merge (leg, event id), in the order read.
/// Pair i's first text runs from the end of pair i - 1 (0 for the first) to `ends[2i]`, its second from there
/// to `ends[2i + 1]`. Zero-initialize, fill with `sb_pairs_append` or `sb_pairs_collect`, release with
/// `sb_pairs_free`.
typedef struct sb_pairs {
  char *bytes;
  size_t used, capacity;
  size_t *ends;
  size_t ends_capacity;
  /// Set by `sb_pairs_sort`: the pairs' indexes in order.
  int *order;
  size_t order_capacity;
  int count;
} sb_pairs;

/// Appends one pair (copied; before `sb_pairs_sort`). Returns SQLITE_OK, or SQLITE_NOMEM (and `pairs` is
/// unchanged). The buffers are anonymous mappings of their own, not the allocator's.
int sb_pairs_append(sb_pairs *pairs, const char *first, int first_length, const char *second, int second_length);

/// Steps `select` (a statement of `sqlite3_stmt *`, bound and reset, whose rows have two text columns) to its
/// end, appending each row's texts to `pairs`, then resets it. Returns SQLITE_DONE, or the error code (the rows
/// appended before it stay).
int sb_pairs_collect(void *select, sb_pairs *pairs);

/// Sorts the pairs by their first text, then their second, as SQLite's BINARY collation orders them (bytes,
/// then length): fills `order`, which `sb_pairs_run` then follows. Returns SQLITE_OK or SQLITE_NOMEM.
int sb_pairs_sort(sb_pairs *pairs);

/// Runs `statement` (a `sqlite3_stmt *`: a call-index merge's INSERT) once for each of the pairs `from` ..< `to`
/// (in `order` once sorted), each bound to parameters 1 and 2 without copying (parameters the caller bound
/// stay bound meanwhile); then resets it and clears all its bindings. A pair whose second text sorts at or
/// before `last_deleted` (BINARY collation) goes to `checked` instead (bound the same way), unless that is NULL.
/// Returns SQLITE_DONE, or the first error's code (the rows changed before it stay, for the caller's transaction
/// to roll back).
int sb_pairs_run(void *statement, void *checked, const char *last_deleted, int last_deleted_length,
                 const sb_pairs *pairs, int from, int to);

void sb_pairs_free(sb_pairs *pairs);

#endif
