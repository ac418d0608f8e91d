// The budget: the capped allocator, the instruction/deadline hook, kills, and a state's lifecycle.
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

// MARK: - Allocator

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sb_runtime *rt = (sb_runtime *)ud;
    if (ptr == NULL) osize = 0;  // osize then encodes the object type, not a size
    if (nsize == 0) {
        free(ptr);
        rt->used -= osize;
        return NULL;
    }
    if (nsize > osize && rt->enforcing && rt->in_host == 0) {
        size_t cap = rt->killed ? rt->limit + SB_KILL_HEADROOM : rt->limit;
        if (rt->used + (nsize - osize) > cap) {
            if (rt->killed == SB_KILL_NONE) rt->killed = SB_KILL_MEMORY;
            return NULL;  // Lua raises LUA_ERRMEM; the sandbox's pcall re-raises it as a kill
        }
    }
    void *block = realloc(ptr, nsize);
    if (block == NULL) return NULL;
    rt->used = rt->used - osize + nsize;
    return block;
}

// MARK: - Kills

/// Raises the kill's message, prefixed with the position at stack `level`. Never returns.
int sb_raise_kill(lua_State *L, int level) {
    sb_runtime *rt = sb_rt(L);
    luaL_where(L, level);
    switch (rt->killed) {
        case SB_KILL_INSTRUCTIONS:
            lua_pushfstring(L, "instruction limit exceeded (%I instructions)", (lua_Integer)rt->instruction_limit);
            break;
        case SB_KILL_DEADLINE:
            lua_pushfstring(L, "time limit exceeded (%f s)", (lua_Number)rt->seconds);
            break;
        default:
            lua_pushfstring(L, "memory limit exceeded (%I bytes)", (lua_Integer)rt->limit);
            break;
    }
    lua_concat(L, 2);
    return lua_error(L);
}

void sb_charge(lua_State *L, int64_t instructions, int level) {
    sb_runtime *rt = sb_rt(L);
    if (!rt->enforcing) return;
    if (rt->killed == SB_KILL_NONE) {
        rt->instructions_left -= instructions;
        if (rt->instructions_left < 0) {
            rt->killed = SB_KILL_INSTRUCTIONS;
        } else if (rt->deadline > 0 && sb_now() > rt->deadline) {
            rt->killed = SB_KILL_DEADLINE;
        }
    }
    if (rt->killed != SB_KILL_NONE) sb_raise_kill(L, level);
}

static void sb_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sb_charge(L, SB_HOOK_STRIDE, 0);
}

static int sb_panic(lua_State *L) {
    const char *message = lua_tostring(L, -1);
    fprintf(stderr, "switchboard: unprotected Lua error (a bug in Switchboard): %s\n",
            message ? message : "(not a string)");
    fflush(stderr);
    abort();
    return 0;
}

// MARK: - Lifecycle

lua_State *sb_newstate(size_t memory_limit) {
    sb_runtime *rt = calloc(1, sizeof(sb_runtime));
    if (rt == NULL) return NULL;
    rt->limit = memory_limit;
    lua_State *L = lua_newstate(sb_alloc, rt);
    if (L == NULL) {
        free(rt);
        return NULL;
    }
    lua_atpanic(L, sb_panic);
    *(const void **)lua_getextraspace(L) = NULL;  // threads copy it: only sb_mark_host_thread sets the marker
    // Threads inherit the hook from the thread that creates them, so every coroutine is budgeted too.
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, SB_HOOK_STRIDE);
    // Generational collection (Lua's own defaults: a minor collection each time memory grows 20%, a major
    // one when it has doubled since the last major). What a rule allocates per event (the event's table, its
    // coroutine's values, a forward's payload) dies young, while the loaded rules (functions, constants,
    // module tables) live as long as the state. The incremental collector re-marks all of those every cycle
    // and lets an event's garbage age until the heap has doubled, so the event's decoded members were freed
    // (through the lazy table's __gc) long after they had left the cache. Measured on 6 December 2026, the
    // engine row alone (SwitchboardEngineLoop, 20 rules): 214,600 -> 223,700 events/s, medians of 6 alternated
    // runs; 58,183 -> 57,176 instructions an event. An allocation the memory cap refuses kills the run
    // whatever Lua's emergency collection then frees (LuaState.lateKill). See sb_collect_garbage for how a
    // full collection is made.
    lua_gc(L, LUA_GCGEN, 0, 0);
    return L;
}

void sb_close(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    lua_close(L);
    sb_lazy_free_scratch(&rt->scratch);
    free(rt);
}


// MARK: - Budget

void sb_budget_begin(lua_State *L, int64_t instructions, double seconds, double now) {
    sb_runtime *rt = sb_rt(L);
    rt->enforcing = 1;
    rt->killed = SB_KILL_NONE;
    rt->instruction_limit = instructions;
    rt->instructions_left = instructions;
    rt->seconds = seconds;
    rt->deadline = seconds > 0 ? (now > 0 ? now : sb_now()) + seconds : 0;
}

int sb_budget_end(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    int killed = rt->killed;
    rt->enforcing = 0;
    rt->killed = SB_KILL_NONE;
    return killed;
}

int64_t sb_budget_instructions_left(lua_State *L) { return sb_rt(L)->instructions_left; }
double sb_budget_seconds_left(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    rt->last_clock = sb_now();
    return rt->deadline > 0 ? rt->deadline - rt->last_clock : rt->seconds;
}

double sb_budget_last_clock(lua_State *L) { return sb_rt(L)->last_clock; }
double sb_clock(void) { return sb_now(); }
size_t sb_memory_used(lua_State *L) { return sb_rt(L)->used; }
void sb_set_memory_limit(lua_State *L, size_t limit) { sb_rt(L)->limit = limit; }
size_t sb_memory_limit(lua_State *L) { return sb_rt(L)->limit; }
void sb_collect_garbage(lua_State *L) {
    // A full collection made as a switch to the incremental collector and back: entering generational mode
    // marks everything, frees the garbage and makes the rest old, whichever mode the collector was in. Lua's
    // own (LUA_GCCOLLECT) does not always leave it generational: after major collections that freed too
    // little (a heap growing fast, as a run on its way to a memory kill makes it) the collector has fallen
    // back to incremental mode, where a full collection sets the next cycle for when the heap has doubled,
    // and only the next step comes back to generational mode, marking everything once more.
    lua_gc(L, LUA_GCINC, 0, 0, 0);
    lua_gc(L, LUA_GCGEN, 0, 0);
    // Entering generational mode, Lua 5.4.4 leaves the next young collection due at the memory level it was
    // due at before, so it waits until what the full collection freed has been allocated again (fixed in
    // 5.4.5: lua/lua a1f77a23). A basic step finds nothing young and sets it from the memory in use now.
    lua_gc(L, LUA_GCSTEP, 0);
}
