// Private to CLuaShim: the per-state bookkeeping and the sentinels the shim's files share.
#ifndef SB_INTERNAL_H
#define SB_INTERNAL_H

#include "CLuaShim.h"

#include <time.h>

/// Extra bytes a killed state may still allocate, so that error messages and tracebacks can be built while
/// the kill unwinds. The script itself cannot use them: every instruction it runs after a kill raises again.
#define SB_KILL_HEADROOM (1024 * 1024)

/// Where a key was found in the last payload that had it (lazy.c's sb_lazy_find).
typedef struct sb_lazy_hint {
    const char *key;
    long position;
} sb_lazy_hint;

#define SB_LAZY_HINTS 64

/// lazy.c's working memory: the buffers strings are described in (a member's key and its value), and the
/// positions keys were last found at.
typedef struct sb_runtime_scratch {
    sb_lazy_scratch key;
    sb_lazy_scratch value;
    sb_lazy_hint hints[SB_LAZY_HINTS];
} sb_runtime_scratch;

/// Per-state bookkeeping, reached through the allocator's userdata.
typedef struct sb_runtime {
    size_t used;
    size_t limit;
    int enforcing;  // 1 while a budgeted call runs: the memory cap applies
    int in_host;    // > 0 while Swift host code runs: never fail an allocation under a Swift frame
    int killed;     // SB_KILL_*; sticky until sb_budget_end
    int64_t instructions_left;
    int64_t instruction_limit;
    double deadline;  // CLOCK_MONOTONIC seconds; 0 when none
    double seconds;
    double last_clock;  // the clock's reading sb_budget_seconds_left last took
    sb_runtime_scratch scratch;
} sb_runtime;

/// Sentinel addresses (their values never matter): json.null, a host suspension, the registry keys of the
/// sandbox template and of the json.array / json.object marker metatables.
extern const char sb_null_sentinel;
extern const char sb_suspend_sentinel;
extern const char sb_array_mt_key;
extern const char sb_object_mt_key;

/// The bookkeeping of the state L belongs to (the allocator's userdata).
static inline sb_runtime *sb_rt(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (sb_runtime *)ud;
}

static inline double sb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/// Raises the kill's message, prefixed with the position at stack `level`. Never returns. (budget.c)
int sb_raise_kill(lua_State *L, int level);

/// What a rule's collectgarbage("collect") or ("step") is charged against its instruction budget: a full
/// collection takes time the instruction count does not see, tens of milliseconds on a heap of tens of
/// megabytes. With the default 10,000,000 instructions a run can make 100.
#define SB_COLLECT_COST 100000

/// Charges `instructions` to the running call's budget and checks its deadline; a kill (this one, or one
/// already pending) is raised with the position at stack `level`. Nothing while no budgeted call runs.
/// (budget.c)
void sb_charge(lua_State *L, int64_t instructions, int level);

/// A new environment table on top of the stack, from the template; may raise. (sandbox.c)
int sb_new_environment_unprotected(lua_State *L);

/// Frees the lazy tables' string buffers. (lazy.c)
void sb_lazy_free_scratch(sb_runtime_scratch *scratch);

/// The sandbox's next, rawget, rawset and getmetatable: Lua's own, after filling in a lazy table. (lazy.c)
int sb_sandbox_next(lua_State *L);
int sb_sandbox_rawget(lua_State *L);
int sb_sandbox_rawset(lua_State *L);
int sb_sandbox_getmetatable(lua_State *L);

#endif
