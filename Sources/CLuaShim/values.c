// Values: the json.null sentinel and the json.array / json.object markers on tables.
#include "internal.h"

const char sb_null_sentinel = 0;

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
