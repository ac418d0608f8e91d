// The sandbox, by allow-list: what rules may reach is listed here, at the top, and nothing else is opened.
// Also the sandbox's own versions of base functions (a kill cannot be caught), environments and require.
#include "internal.h"

#include <string.h>

// MARK: - Allow-lists

/// Base functions copied into every environment (pcall, xpcall, setmetatable, collectgarbage and load are
/// the sandbox's own versions, below). Libraries: string (without dump), table, math, utf8, and these:
static const char *const base_names[] = {
    "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
    "rawset", "select", "tonumber", "tostring", "type", "_VERSION", NULL};
static const char *const os_names[] = {"time", "clock", "date", NULL};
static const char *const coroutine_names[] = {
    "create", "isyieldable", "running", "status", "wrap", "yield", NULL};

static const char sb_template_key = 0;
const char sb_array_mt_key = 0;
const char sb_object_mt_key = 0;

// MARK: - The sandbox's own base functions

/// pcall/xpcall continuation: a kill is re-raised, anything else behaves as Lua's own pcall.
static int sb_finish_pcall(lua_State *L, int status, lua_KContext extra) {
    // A kill the protected function outran too: an allocation the memory cap refused and Lua's emergency
    // collection then let through, before the hook that raises it came round.
    if (sb_rt(L)->killed != SB_KILL_NONE) return sb_raise_kill(L, 1);
    if (status != LUA_OK && status != LUA_YIELD) {
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
/// The thread a rule runs in (from coroutine.running()) is refused: it belongs to the host, which reuses it
/// for later runs of any rule. Upvalue 1 is the library's own function.
static int sb_coroutine_rethrow(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    if (co != NULL && sb_is_host_thread(co)) {
        return luaL_error(L, "a rule cannot resume or close the coroutine it runs in (from coroutine.running())");
    }
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
    sb_lazy_fill(L, 1);  // an event's fields, before its lazy metatable goes
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
/// A collection is charged to the run's budget (SB_COLLECT_COST), and its deadline is checked after it.
static int sb_collectgarbage(lua_State *L) {
    const char *option = luaL_optstring(L, 1, "collect");
    if (strcmp(option, "collect") == 0) {
        sb_collect_garbage(L);
        sb_charge(L, SB_COLLECT_COST, 1);
        lua_pushinteger(L, 0);
    } else if (strcmp(option, "step") == 0) {
        int finished = lua_gc(L, LUA_GCSTEP, 0);
        sb_charge(L, SB_COLLECT_COST, 1);
        lua_pushboolean(L, finished);
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

    lua_newtable(L);  // the template
    int template_index = lua_gettop(L);

    luaL_requiref(L, "_G", luaopen_base, 0);
    sb_keep_only(L, base_names);
    sb_copy_entries(L, -1, template_index);  // base functions go straight into the template
    lua_pop(L, 1);
    // The sandbox's own versions over Lua's (next, rawget, rawset and getmetatable: lazy.c).
    static const luaL_Reg own_base[] = {
        {"pcall", sb_pcall},
        {"xpcall", sb_xpcall},
        {"setmetatable", sb_setmetatable},
        {"collectgarbage", sb_collectgarbage},
        {"next", sb_sandbox_next},
        {"rawget", sb_sandbox_rawget},
        {"rawset", sb_sandbox_rawset},
        {"getmetatable", sb_sandbox_getmetatable},
        {NULL, NULL},
    };
    lua_pushvalue(L, template_index);
    luaL_setfuncs(L, own_base, 0);
    lua_pop(L, 1);

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

int sb_new_environment_unprotected(lua_State *L) {
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
