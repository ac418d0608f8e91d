// See CLuaShim.h for why this file exists. Every lua_error in Switchboard is raised from here.
#include "CLuaShim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/// Extra bytes a killed state may still allocate, so that error messages and tracebacks can be built while
/// the kill unwinds. The script itself cannot use them: every instruction it runs after a kill raises again.
#define SB_KILL_HEADROOM (1024 * 1024)

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
} sb_runtime;

static sb_host_dispatch sb_dispatch = NULL;
static const char sb_null_sentinel = 0;
static const char sb_suspend_sentinel = 0;
static const char sb_template_key = 0;
static const char sb_array_mt_key = 0;
static const char sb_object_mt_key = 0;

static int sb_new_environment_unprotected(lua_State *L);

static sb_runtime *sb_rt(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (sb_runtime *)ud;
}

static double sb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
static int sb_raise_kill(lua_State *L, int level) {
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

static void sb_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sb_runtime *rt = sb_rt(L);
    if (!rt->enforcing) return;
    if (rt->killed == SB_KILL_NONE) {
        rt->instructions_left -= SB_HOOK_STRIDE;
        if (rt->instructions_left < 0) {
            rt->killed = SB_KILL_INSTRUCTIONS;
        } else if (rt->deadline > 0 && sb_now() > rt->deadline) {
            rt->killed = SB_KILL_DEADLINE;
        }
    }
    if (rt->killed != SB_KILL_NONE) sb_raise_kill(L, 0);
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
    return L;
}

void sb_close(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    lua_close(L);
    free(rt);
}

void sb_set_host_dispatch(sb_host_dispatch dispatch) { sb_dispatch = dispatch; }

// MARK: - Budget

void sb_budget_begin(lua_State *L, int64_t instructions, double seconds) {
    sb_runtime *rt = sb_rt(L);
    rt->enforcing = 1;
    rt->killed = SB_KILL_NONE;
    rt->instruction_limit = instructions;
    rt->instructions_left = instructions;
    rt->seconds = seconds;
    rt->deadline = seconds > 0 ? sb_now() + seconds : 0;
}

int sb_budget_end(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    int killed = rt->killed;
    rt->enforcing = 0;
    rt->killed = SB_KILL_NONE;
    return killed;
}

int64_t sb_budget_instructions_left(lua_State *L) { return sb_rt(L)->instructions_left; }
size_t sb_memory_used(lua_State *L) { return sb_rt(L)->used; }
void sb_set_memory_limit(lua_State *L, size_t limit) { sb_rt(L)->limit = limit; }
size_t sb_memory_limit(lua_State *L) { return sb_rt(L)->limit; }
void sb_collect_garbage(lua_State *L) { lua_gc(L, LUA_GCCOLLECT); }

// MARK: - Host functions

static int sb_host_trampoline(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    void *box = lua_touserdata(L, lua_upvalueindex(1));
    rt->in_host++;
    int results = sb_dispatch(L, box);
    rt->in_host--;
    if (results == SB_SUSPEND) {
        lua_pushlightuserdata(L, (void *)&sb_suspend_sentinel);
        lua_insert(L, -2);
        return lua_yield(L, 2);
    }
    if (results == SB_RAISE) {
        luaL_where(L, 1);  // "chunk:line: " of the Lua code that called the host function
        lua_insert(L, -2);
        lua_concat(L, 2);
        return lua_error(L);
    }
    if (rt->enforcing && rt->killed == SB_KILL_NONE && rt->used > rt->limit) rt->killed = SB_KILL_MEMORY;
    if (rt->killed != SB_KILL_NONE) return sb_raise_kill(L, 1);
    return results;
}

void sb_push_host_function(lua_State *L, void *box) {
    lua_pushlightuserdata(L, box);
    lua_pushcclosure(L, sb_host_trampoline, 1);
}

// MARK: - Protected calls

static int sb_message_handler(lua_State *L) {
    const char *message = lua_tostring(L, 1);
    if (message == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            message = lua_tostring(L, -1);
        } else {
            message = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, message, 1);
    return 1;
}

int sb_pcall_traceback(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs;  // the function's index
    lua_pushcfunction(L, sb_message_handler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

// MARK: - The sandbox's own base functions

/// pcall/xpcall continuation: a kill is re-raised, anything else behaves as Lua's own pcall.
static int sb_finish_pcall(lua_State *L, int status, lua_KContext extra) {
    if (status != LUA_OK && status != LUA_YIELD) {
        if (sb_rt(L)->killed != SB_KILL_NONE) return sb_raise_kill(L, 1);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, sb_finish_pcall);
    return sb_finish_pcall(L, status, 0);
}

static int sb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);  // stack: f, handler, true, f, args...
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, sb_finish_pcall);
    return sb_finish_pcall(L, status, 2);
}

/// coroutine.resume and coroutine.close report errors as values; a kill inside the coroutine is re-raised.
/// Upvalue 1 is the library's own function.
static int sb_coroutine_rethrow(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    if (sb_rt(L)->killed != SB_KILL_NONE) return sb_raise_kill(L, 1);
    return lua_gettop(L);
}

/// setmetatable without __gc: a finalizer would run Lua code outside any budgeted call.
static int sb_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        if (lua_getfield(L, 2, "__gc") != LUA_TNIL) {
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed in rules");
        }
        lua_pop(L, 1);
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) {
        return luaL_error(L, "cannot change a protected metatable");
    }
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/// collectgarbage limited to what cannot hurt the host: "collect" (default), "step", "count", "isrunning".
static int sb_collectgarbage(lua_State *L) {
    const char *option = luaL_optstring(L, 1, "collect");
    if (strcmp(option, "collect") == 0) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_pushinteger(L, 0);
    } else if (strcmp(option, "step") == 0) {
        lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, 0));
    } else if (strcmp(option, "count") == 0) {
        int kb = lua_gc(L, LUA_GCCOUNT);
        int rest = lua_gc(L, LUA_GCCOUNTB);
        lua_pushnumber(L, (lua_Number)kb + ((lua_Number)rest / 1024));
    } else if (strcmp(option, "isrunning") == 0) {
        lua_pushboolean(L, lua_gc(L, LUA_GCISRUNNING));
    } else {
        return luaL_error(L, "collectgarbage: option '%s' is not allowed in rules "
                             "(allowed: collect, step, count, isrunning)", option);
    }
    return 1;
}

/// load(chunk [, chunkname [, mode [, env]]]): text chunks only; the environment defaults to the caller's.
static int sb_load_bound(lua_State *L) {
    size_t length = 0;
    const char *source = lua_tolstring(L, 1, &length);
    if (source == NULL) {
        return luaL_error(L, "load: only string chunks are allowed in rules");
    }
    const char *chunkname = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 't') == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "load: binary chunks are not allowed in rules (mode must include 't')");
        return 2;
    }
    int has_env = lua_gettop(L) >= 4;
    if (luaL_loadbufferx(L, source, length, chunkname, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) {
        lua_pushvalue(L, 4);
    } else {
        lua_pushvalue(L, lua_upvalueindex(1));
    }
    if (lua_setupvalue(L, -2, 1) == NULL) lua_pop(L, 1);
    return 1;
}

static int sb_undefined_global(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING) {
        return luaL_error(L, "undefined global '%s'", lua_tostring(L, 2));
    }
    return luaL_error(L, "undefined global (a %s key)", luaL_typename(L, 2));
}

static int sb_null_tostring(lua_State *L) {
    lua_pushliteral(L, "null");
    return 1;
}

// MARK: - Sandbox set-up

/// Copies every entry of the table at `from` into the table at `to` (raw). Stack effect: none.
static void sb_copy_entries(lua_State *L, int from, int to) {
    from = lua_absindex(L, from);
    to = lua_absindex(L, to);
    lua_pushnil(L);
    while (lua_next(L, from) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, to);
    }
}

/// Copies `names` from the table at -1 into a new table, which replaces it. Stack effect: none.
static void sb_keep_only(lua_State *L, const char *const *names) {
    lua_newtable(L);
    for (const char *const *name = names; *name != NULL; name++) {
        lua_getfield(L, -2, *name);
        lua_setfield(L, -2, *name);
    }
    lua_remove(L, -2);
}

static void sb_make_marker(lua_State *L, const void *key, const char *name) {
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

static int sb_open_sandbox_unprotected(lua_State *L) {
    static const char *const base_names[] = {
        "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
        "rawset", "select", "tonumber", "tostring", "type", "_VERSION", NULL};
    static const char *const os_names[] = {"time", "clock", "date", NULL};
    static const char *const coroutine_names[] = {
        "create", "isyieldable", "running", "status", "wrap", "yield", NULL};

    lua_newtable(L);  // the template
    int template_index = lua_gettop(L);

    luaL_requiref(L, "_G", luaopen_base, 0);
    sb_keep_only(L, base_names);
    sb_copy_entries(L, -1, template_index);  // base functions go straight into the template
    lua_pop(L, 1);
    lua_pushcfunction(L, sb_pcall);
    lua_setfield(L, template_index, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, template_index, "xpcall");
    lua_pushcfunction(L, sb_setmetatable);
    lua_setfield(L, template_index, "setmetatable");
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setfield(L, template_index, "collectgarbage");

    luaL_requiref(L, "string", luaopen_string, 0);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_setfield(L, template_index, "string");
    // Lock the string metatable: `getmetatable("")` must not hand out the one table every rule shares.
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    luaL_requiref(L, "table", luaopen_table, 0);
    lua_setfield(L, template_index, "table");
    luaL_requiref(L, "math", luaopen_math, 0);
    lua_setfield(L, template_index, "math");
    luaL_requiref(L, "utf8", luaopen_utf8, 0);
    lua_setfield(L, template_index, "utf8");

    luaL_requiref(L, "coroutine", luaopen_coroutine, 0);
    int full_coroutine = lua_gettop(L);
    lua_pushvalue(L, full_coroutine);
    sb_keep_only(L, coroutine_names);
    lua_getfield(L, full_coroutine, "resume");
    lua_pushcclosure(L, sb_coroutine_rethrow, 1);
    lua_setfield(L, -2, "resume");
    lua_getfield(L, full_coroutine, "close");
    lua_pushcclosure(L, sb_coroutine_rethrow, 1);
    lua_setfield(L, -2, "close");
    lua_setfield(L, template_index, "coroutine");
    lua_pop(L, 1);

    luaL_requiref(L, "os", luaopen_os, 0);
    sb_keep_only(L, os_names);
    lua_setfield(L, template_index, "os");

    // Forget the libraries' registrations: nothing a rule can reach leads back to the full tables.
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);

    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_template_key);

    // json.null: a light userdata whose tostring is "null". Light userdata share one metatable, locked here.
    sb_push_null(L);
    lua_newtable(L);
    lua_pushcfunction(L, sb_null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.null");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);

    sb_make_marker(L, &sb_array_mt_key, "json.array");
    sb_make_marker(L, &sb_object_mt_key, "json.object");
    return 0;
}

int sb_open_sandbox(lua_State *L) {
    lua_pushcfunction(L, sb_open_sandbox_unprotected);
    int status = lua_pcall(L, 0, 0, 0);
    if (status != LUA_OK) lua_pop(L, 1);
    return status;
}

static int sb_new_environment_unprotected(lua_State *L) {
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_template_key);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -1) == LUA_TTABLE) {  // a library: give this environment its own copy
            lua_newtable(L);
            sb_copy_entries(L, -2, -1);
            lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sb_load_bound, 1);
    lua_setfield(L, env, "load");
    lua_newtable(L);
    lua_pushcfunction(L, sb_undefined_global);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    return 1;
}

int sb_new_environment(lua_State *L) {
    lua_pushcfunction(L, sb_new_environment_unprotected);
    return lua_pcall(L, 0, 1, 0);
}

void sb_push_template(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_template_key); }

/// require(name): upvalue 1 caches loaded modules, upvalue 2 holds their sources.
static int sb_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {  // [name, cached]
        if (lua_touserdata(L, -1) == (void *)&sb_suspend_sentinel) {
            return luaL_error(L, "require: circular require of '%s'", name);
        }
        return 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, lua_upvalueindex(2), name) != LUA_TTABLE) {
        return luaL_error(L, "module '%s' not found: require loads Lua files from the rules directory only "
                             "(\"lib.phone\" is rules/lib/phone.lua)", name);
    }
    int entry = lua_gettop(L);
    lua_getfield(L, entry, "source");
    lua_getfield(L, entry, "chunk");
    size_t length = 0;
    const char *source = lua_tolstring(L, -2, &length);
    const char *chunk = lua_tostring(L, -1);
    if (source == NULL || chunk == NULL) return luaL_error(L, "require: module '%s' has no source", name);
    lua_pushlightuserdata(L, (void *)&sb_suspend_sentinel);  // "loading", to catch cycles
    lua_setfield(L, lua_upvalueindex(1), name);
    sb_new_environment_unprotected(L);
    int env = lua_gettop(L);
    if (luaL_loadbufferx(L, source, length, chunk, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_setfield(L, lua_upvalueindex(1), name);
        return lua_error(L);
    }
    lua_pushvalue(L, env);
    lua_setupvalue(L, -2, 1);
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {  // forget the "loading" mark, then re-raise
        lua_pushnil(L);
        lua_setfield(L, lua_upvalueindex(1), name);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), name);
    return 1;
}

void sb_push_require(lua_State *L) {
    lua_newtable(L);   // cache
    lua_insert(L, -2); // cache, sources
    lua_pushcclosure(L, sb_require, 2);
}

static int sb_mark(lua_State *L) {
    int kind = (int)lua_tointeger(L, lua_upvalueindex(1));
    if (lua_isnoneornil(L, 1)) {
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL && sb_table_marker(L, 1) == 0) {
            return luaL_error(L, "%s: the table has a protected metatable", kind == 1 ? "json.array" : "json.object");
        }
        lua_settop(L, 1);
    }
    sb_mark_table(L, -1, kind);
    return 1;
}

void sb_push_marker_function(lua_State *L, int kind) {
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, sb_mark, 1);
}

static const char sb_host_thread_marker = 0;

void sb_mark_host_thread(lua_State *thread) {
    *(const void **)lua_getextraspace(thread) = &sb_host_thread_marker;
}

int sb_is_host_thread(lua_State *L) {
    return *(const void **)lua_getextraspace(L) == (const void *)&sb_host_thread_marker;
}

void sb_touch(lua_State *L) {
    // An instrumented read of the state's own memory: under AddressSanitizer a state or thread that was
    // already closed is reported here (heap-use-after-free), before uninstrumented liblua code reads it.
    volatile const unsigned char *bytes = (volatile const unsigned char *)L;
    (void)bytes[0];
}

int sb_push_position(lua_State *L, lua_State *thread) {
    lua_Debug ar;
    for (int level = 0; lua_getstack(thread, level, &ar); level++) {
        if (!lua_getinfo(thread, "Sl", &ar)) break;
        if (ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d:", ar.short_src, ar.currentline);
            return 1;
        }
    }
    return 0;
}

int sb_is_host_suspension(lua_State *L, int index) {
    return lua_type(L, index) == LUA_TLIGHTUSERDATA && lua_touserdata(L, index) == (void *)&sb_suspend_sentinel;
}

int sb_load_text(lua_State *L, const char *source, size_t length, const char *chunkname, int env_index) {
    int env = lua_absindex(L, env_index);
    int status = luaL_loadbufferx(L, source, length, chunkname, "t");
    if (status != LUA_OK) return status;
    lua_pushvalue(L, env);
    if (lua_setupvalue(L, -2, 1) == NULL) lua_pop(L, 1);
    return LUA_OK;
}

// MARK: - Values

void sb_push_null(lua_State *L) { lua_pushlightuserdata(L, (void *)&sb_null_sentinel); }

int sb_is_null(lua_State *L, int index) {
    return lua_type(L, index) == LUA_TLIGHTUSERDATA && lua_touserdata(L, index) == (void *)&sb_null_sentinel;
}

void sb_mark_table(lua_State *L, int index, int kind) {
    int table = lua_absindex(L, index);
    lua_rawgetp(L, LUA_REGISTRYINDEX, kind == 1 ? (const void *)&sb_array_mt_key : (const void *)&sb_object_mt_key);
    lua_setmetatable(L, table);
}

int sb_table_marker(lua_State *L, int index) {
    if (!lua_getmetatable(L, index)) return 0;
    int marker = 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_array_mt_key);
    if (lua_rawequal(L, -1, -2)) {
        marker = 1;
    } else {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_object_mt_key);
        if (lua_rawequal(L, -1, -3)) marker = 2;
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return marker;
}
