// Calls between Swift and Lua: the host-function trampoline (every lua_error and lua_yield a Swift host
// function causes is raised here, never under a Swift frame), protected calls with a traceback, and the
// marks that tell a rule's own coroutine from one it created.
#include "internal.h"

static sb_host_dispatch sb_dispatch = NULL;
const char sb_suspend_sentinel = 0;

void sb_set_host_dispatch(sb_host_dispatch dispatch) { sb_dispatch = dispatch; }

// MARK: - Host functions

static int sb_host_trampoline(lua_State *L) {
    sb_runtime *rt = sb_rt(L);
    void *box = lua_touserdata(L, lua_upvalueindex(1));
    rt->in_host++;
    int results = sb_dispatch(L, box);
    rt->in_host--;
    // A kill first, before the run can suspend (a resume begins a new budget, which would forget it) or raise
    // the host's own error in its place.
    if (rt->enforcing && rt->killed == SB_KILL_NONE && rt->used > rt->limit) rt->killed = SB_KILL_MEMORY;
    if (rt->killed != SB_KILL_NONE) return sb_raise_kill(L, 1);
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

static const char sb_host_thread_marker = 0;

void sb_mark_host_thread(lua_State *thread) {
    *(const void **)lua_getextraspace(thread) = &sb_host_thread_marker;
}

int sb_is_host_thread(lua_State *L) {
    return *(const void **)lua_getextraspace(L) == (const void *)&sb_host_thread_marker;
}

int sb_entry_line(lua_State *thread) {
    lua_Debug ar;
    // The deepest level is the thread's entry function. lua_getstack walks `level` frames each time, so the
    // depth is found by doubling and halving, not by trying every level (a stack overflow is deep).
    if (!lua_getstack(thread, 0, &ar)) return 0;
    int known = 0, beyond = 1;
    while (lua_getstack(thread, beyond, &ar)) {
        known = beyond;
        beyond *= 2;
    }
    while (beyond - known > 1) {
        int middle = known + (beyond - known) / 2;
        if (lua_getstack(thread, middle, &ar)) known = middle; else beyond = middle;
    }
    if (!lua_getstack(thread, known, &ar) || !lua_getinfo(thread, "l", &ar)) return 0;
    return ar.currentline > 0 ? ar.currentline : 0;
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
