#ifndef SWITCHBOARD_CSQLITETUNING_H
#define SWITCHBOARD_CSQLITETUNING_H

/// Turns off SQLite's memory statistics for the whole process (`SQLITE_CONFIG_MEMSTATUS`), which otherwise
/// take a process-wide mutex around every allocation SQLite makes. sqlite3_config is variadic, so Swift
/// cannot call it itself. It only works before SQLite is first used in the process: returns SQLite's result
/// code (SQLITE_OK, or SQLITE_MISUSE when SQLite was already initialized and the statistics stay on).
int sb_sqlite_memstatus_off(void);

#endif
