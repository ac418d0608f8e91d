// Lazy event tables: a rule's `event` whose fields become Lua values when the rule first reads them.
//
// A Kazoo event has 20 to 60 fields and a rule reads a handful. Building every field into the table before
// the rule runs (a Lua string for each key and value, a table insert each) was a third of the instructions
// of an event's trip through a rule. Here the table starts empty, with a metatable whose __index asks the
// host's payload for a field, sets it in the table and returns it. The few fields the host adds to an event
// (`kind`, `name`, ...) are members of its payload too, after the event's own, and hide an own member of the
// same key: setting them in the table up front, and marking what they replace, cost more than the rule's reads.
//
// Nothing a rule can do tells the difference from a table built in full:
//  - a payload field read, assigned or set to nil is marked in a bitset (by its position in the payload), so
//    a later read never brings the payload's value back over the rule's;
//  - everything that looks at the table's raw contents first fills in every field, then drops the metatable
//    and the table's private link to its payload, leaving a plain table: pairs (through __pairs), and the
//    sandbox's next, rawget, rawset, getmetatable and setmetatable (below); the host does the same before it
//    reads a table (sb_lazy_fill). The private link is a light userdata key no script can make.
//
// The payload is the host's (a retained Swift object), reached through sb_lazy_callbacks, which never call
// Lua: every Lua call that can raise (an allocation under the memory cap) is made here, in C, so no error
// unwinds a Swift frame. The payload's reference is held by a full userdata whose __gc releases it; that
// userdata exists before the host hands over the reference, so an allocation failure leaks nothing.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static sb_lazy_callbacks lazy_store;
static const sb_lazy_callbacks *const lazy = &lazy_store;
static const char sb_lazy_key = 0;     // table[&sb_lazy_key] = its payload's userdata (an sb_lazy_box)
static const char sb_lazy_mt_key = 0;  // registry: the metatable every lazy table shares
static const char sb_box_mt_key = 0;   // registry: the payload userdata's metatable (__gc)

/// A payload held by Lua: the host's box (one reference), how many members it has, and one bit per member
/// that the table's own value replaces (read, assigned or deleted).
typedef struct sb_lazy_box {
    void *box;
    long count;
    unsigned char seen[];
} sb_lazy_box;

void sb_set_lazy_callbacks(const sb_lazy_callbacks *callbacks) { lazy_store = *callbacks; }

char *sb_lazy_item_reserve(sb_lazy_item *item, size_t length) {
    sb_lazy_scratch *scratch = item->scratch;
    if (length > scratch->capacity) {
        size_t capacity = length < 256 ? 256 : length;
        char *bytes = realloc(scratch->bytes, capacity);
        if (bytes == NULL) abort();  // plain malloc failing: nothing sensible is left to do
        scratch->bytes = bytes;
        scratch->capacity = capacity;
    }
    item->bytes = scratch->bytes;
    item->length = length;
    return scratch->bytes;
}

void sb_lazy_free_scratch(sb_runtime_scratch *scratch) {
    free(scratch->key.bytes);
    free(scratch->value.bytes);
}

static int sb_box_gc(lua_State *L) {
    sb_lazy_box *b = (sb_lazy_box *)lua_touserdata(L, 1);
    if (b != NULL && b->box != NULL) {
        void *box = b->box;
        b->box = NULL;
        lazy->release(box);
    }
    return 0;
}

/// A new userdata for a payload of `count` members, holding none yet, with the __gc that releases one.
/// Stack effect: +1. May raise.
static sb_lazy_box *sb_new_box(lua_State *L, long count) {
    size_t bits = count > 0 ? ((size_t)count + 7) / 8 : 0;
    sb_lazy_box *b = (sb_lazy_box *)lua_newuserdatauv(L, sizeof(sb_lazy_box) + bits, 0);
    b->box = NULL;
    b->count = count;
    memset(b->seen, 0, bits);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_box_mt_key) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, sb_box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_box_mt_key);
    }
    lua_setmetatable(L, -2);
    return b;
}

static int seen(const sb_lazy_box *b, long position) {
    return position >= 0 && position < b->count && (b->seen[position / 8] >> (position % 8)) & 1;
}

static void mark(sb_lazy_box *b, long position) {
    if (position >= 0 && position < b->count) b->seen[position / 8] |= (unsigned char)(1u << (position % 8));
}

static int sb_lazy_index(lua_State *L);
static int sb_lazy_newindex(lua_State *L);
static int sb_lazy_pairs(lua_State *L);
static void sb_push_item(lua_State *L, void *box, long position, const sb_lazy_item *item);

/// Pushes the metatable all lazy tables share, made on first use. Stack effect: +1. May raise.
static void sb_push_lazy_metatable(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_lazy_mt_key) != LUA_TNIL) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, sb_lazy_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sb_lazy_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, sb_lazy_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_lazy_mt_key);
}

/// Pushes a lazy table over a payload of `count` members: `box` itself (parent NULL; a reference the table
/// takes over), or the object at `position` of `parent`. Stack effect: +1. May raise; whatever it raises,
/// the box is then already Lua's to release.
static void sb_push_lazy(lua_State *L, void *box, void *parent, long position, long count) {
    lua_createtable(L, 0, 8);
    sb_lazy_box *b = sb_new_box(L, count);
    b->box = parent != NULL ? lazy->child(parent, position) : box;
    lua_rawsetp(L, -2, &sb_lazy_key);
    sb_push_lazy_metatable(L);
    lua_setmetatable(L, -2);
}

void sb_push_lazy_object(lua_State *L, void *box, long count) {
    // Pushed by the host outside a budget, where only running out of memory raises (and panics).
    sb_push_lazy(L, box, NULL, 0, count);
}

/// The payload of the lazy table at `index`, or NULL for any other value. Stack effect: none.
static sb_lazy_box *sb_lazy_payload(lua_State *L, int index) {
    if (lua_type(L, index) != LUA_TTABLE || !lua_getmetatable(L, index)) return NULL;  // most tables: no metatable
    lua_pop(L, 1);
    sb_lazy_box *b = NULL;
    if (lua_rawgetp(L, index, &sb_lazy_key) == LUA_TUSERDATA) b = (sb_lazy_box *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b != NULL && b->box != NULL ? b : NULL;
}


/// The payload position of the string key at `key` (value described in *value when not NULL), or -1.
///
/// Events of one kind list their fields in the same order, and Lua keeps one copy of each short string: the
/// position a key (by the address of its bytes) was found at last time is tried first. A wrong guess (another
/// payload, or a string since collected whose address was reused) costs one comparison.
static long sb_lazy_find(lua_State *L, sb_lazy_box *b, int key, sb_lazy_item *value) {
    if (lua_type(L, key) != LUA_TSTRING) return -1;
    size_t length = 0;
    const char *bytes = lua_tolstring(L, key, &length);
    sb_lazy_hint *hint = &sb_rt(L)->scratch.hints[((uintptr_t)bytes >> 4) % SB_LAZY_HINTS];
    long position = lazy->find(b->box, bytes, length, hint->key == bytes ? hint->position : -1, value);
    if (position >= 0) {
        hint->key = bytes;
        hint->position = position;
    }
    return position;
}

/// __index(t, k): the payload's field k, now set in t; nil for a field the payload lacks, or one the table
/// has held since (read, then deleted).
static int sb_lazy_index(lua_State *L) {
    sb_lazy_box *b = sb_lazy_payload(L, 1);
    if (b == NULL) return 0;
    sb_lazy_item value = {.scratch = &sb_rt(L)->scratch.value};
    long position = sb_lazy_find(L, b, 2, &value);
    if (position < 0 || seen(b, position)) return 0;
    sb_push_item(L, b->box, position, &value);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    mark(b, position);
    return 1;
}

/// __newindex(t, k, v), for a key t does not hold: k is the table's own from now on, whatever the payload
/// says.
static int sb_lazy_newindex(lua_State *L) {
    sb_lazy_box *b = sb_lazy_payload(L, 1);
    if (b != NULL) mark(b, sb_lazy_find(L, b, 2, NULL));
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

void sb_lazy_fill(lua_State *L, int index) {
    index = lua_absindex(L, index);
    sb_lazy_box *b = sb_lazy_payload(L, index);
    if (b == NULL) return;
    luaL_checkstack(L, 4, "filling an event table");
    // Every payload field the table already holds is marked (read, assigned or deleted): the unmarked ones
    // are exactly those to set, but for hidden ones. The table's link keeps b alive until it goes.
    sb_runtime_scratch *scratch = &sb_rt(L)->scratch;
    for (long position = 0; position < b->count; position++) {
        if (seen(b, position)) continue;
        sb_lazy_item key = {.scratch = &scratch->key};
        sb_lazy_item value = {.scratch = &scratch->value};
        int found = lazy->at(b->box, position, &key, &value);
        if (!found) break;
        if (found == SB_LAZY_HIDDEN) continue;
        lua_pushlstring(L, key.bytes, key.length);
        sb_push_item(L, b->box, position, &value);
        lua_rawset(L, index);
        mark(b, position);
    }
    lua_pushnil(L);
    lua_rawsetp(L, index, &sb_lazy_key);
    lua_pushnil(L);
    lua_setmetatable(L, index);  // a plain table now
}

static int sb_lazy_fill_call(lua_State *L) {
    sb_lazy_fill(L, 1);
    return 0;
}

int sb_lazy_fill_protected(lua_State *L, int index) {
    if (sb_lazy_payload(L, index) == NULL) return LUA_OK;
    index = lua_absindex(L, index);
    if (!lua_checkstack(L, 2)) return LUA_ERRMEM;
    lua_pushcfunction(L, sb_lazy_fill_call);
    lua_pushvalue(L, index);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) lua_pop(L, 1);
    return status;
}

static int sb_raw_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1)) return 2;
    lua_pushnil(L);
    return 1;
}

/// __pairs(t): every field, as pairs over a plain table.
static int sb_lazy_pairs(lua_State *L) {
    sb_lazy_fill(L, 1);
    lua_pushcfunction(L, sb_raw_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/// Pushes one payload value: scalars as they are, an empty object as a table marked as an object, a
/// non-empty object as a lazy table, an array as a table built in full (marked as an array).
static void sb_push_item(lua_State *L, void *box, long position, const sb_lazy_item *item) {
    switch (item->kind) {
        case SB_ITEM_FALSE: lua_pushboolean(L, 0); break;
        case SB_ITEM_TRUE: lua_pushboolean(L, 1); break;
        case SB_ITEM_INTEGER: lua_pushinteger(L, item->integer); break;
        case SB_ITEM_NUMBER: lua_pushnumber(L, item->number); break;
        case SB_ITEM_STRING: lua_pushlstring(L, item->bytes, item->length); break;
        case SB_ITEM_EMPTY_OBJECT:
            lua_createtable(L, 0, 0);
            sb_mark_table(L, -1, 2);
            break;
        case SB_ITEM_OBJECT: sb_push_lazy(L, NULL, box, position, (long)item->length); break;
        case SB_ITEM_ARRAY: {
            luaL_checkstack(L, 4, "reading a nested array");
            lua_createtable(L, (int)item->length, 0);
            int table = lua_gettop(L);
            sb_lazy_box *array = sb_new_box(L, 0);  // the array's payload, released with this userdata
            array->box = lazy->child(box, position);
            sb_runtime_scratch *scratch = &sb_rt(L)->scratch;
            for (long i = 0;; i++) {
                sb_lazy_item element = {.scratch = &scratch->value};
                if (!lazy->at(array->box, i, NULL, &element)) break;
                sb_push_item(L, array->box, i, &element);
                lua_rawseti(L, table, (lua_Integer)i + 1);
            }
            lua_settop(L, table);
            sb_mark_table(L, table, 1);
            break;
        }
        default: sb_push_null(L); break;
    }
}

// MARK: - The sandbox's raw access: a lazy table is filled in first

int sb_sandbox_next(lua_State *L) {
    sb_lazy_fill(L, 1);
    return sb_raw_next(L);
}

/// Checks the table and its `count - 1` arguments as Lua's rawget/rawset do, fills the table in, and leaves
/// exactly them on the stack.
static void sb_raw_arguments(lua_State *L, int count) {
    luaL_checktype(L, 1, LUA_TTABLE);
    for (int i = 2; i <= count; i++) luaL_checkany(L, i);
    sb_lazy_fill(L, 1);
    lua_settop(L, count);
}

int sb_sandbox_rawget(lua_State *L) {
    sb_raw_arguments(L, 2);
    lua_rawget(L, 1);
    return 1;
}

int sb_sandbox_rawset(lua_State *L) {
    sb_raw_arguments(L, 3);
    lua_rawset(L, 1);  // leaves the table, which rawset returns
    return 1;
}

int sb_sandbox_getmetatable(lua_State *L) {
    luaL_checkany(L, 1);
    sb_lazy_fill(L, 1);
    if (!lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    luaL_getmetafield(L, 1, "__metatable");  // pushes __metatable over the metatable when there is one
    return 1;
}
