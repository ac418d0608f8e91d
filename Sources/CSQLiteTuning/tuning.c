#include <sqlite3.h>

#include "CSQLiteTuning.h"

int sb_sqlite_memstatus_off(void) { return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }
