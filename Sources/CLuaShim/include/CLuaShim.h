// CLuaShim: the only C in Switchboard besides Debian's liblua5.4.
//
// Everything here exists for one of three reasons:
//  1. Swift cannot import Lua's function-like macros or variadic functions, so they are re-exported as
//     static inline functions.
//  2. No lua_error, lua_yield or other longjmp may ever cross a Swift frame. Every place that raises a Lua
//     error lives in this file: the host-function trampoline, the budget hook, the sandbox's replacements for
//     pcall/xpcall/coroutine.resume, and the capped allocator's kill.
//  3. The budget (instructions, wall clock, memory) must be enforced from C so that a script cannot dodge it.
#ifndef CLUASHIM_H
#define CLUASHIM_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/// A Swift host function returns a result count >= 0, or SB_RAISE after pushing an error message; the C
/// trampoline then raises that message with lua_error. Swift never calls lua_error itself.
#define SB_RAISE (-1)
/// A suspending host function returns SB_SUSPEND after pushing its request; the trampoline yields the
/// coroutine with (host sentinel, request), and the values the host resumes it with become the results.
#define SB_SUSPEND (-2)

/// Why a budgeted call was killed (see sb_budget_end). Zero means it was not.
#define SB_KILL_NONE 0
#define SB_KILL_INSTRUCTIONS 1
#define SB_KILL_DEADLINE 2
#define SB_KILL_MEMORY 3

/// How many VM instructions run between two checks of the budget.
#define SB_HOOK_STRIDE 1000

/// The dispatcher every host function goes through: `box` is the opaque pointer registered with
/// sb_push_host_function. Returns a result count, or SB_RAISE with an error message on top of the stack.
typedef int (*sb_host_dispatch)(lua_State *L, void *box);

// MARK: - State lifecycle

/// Creates a state whose allocator counts every byte and enforces `memory_limit` while a budgeted call runs.
/// Installs the budget hook and a panic handler that logs and aborts. Returns NULL when out of memory.
lua_State *sb_newstate(size_t memory_limit);
/// Closes the state and frees its bookkeeping.
void sb_close(lua_State *L);
/// Sets the function that every host-function trampoline calls. Set once per process, before any call.
void sb_set_host_dispatch(sb_host_dispatch dispatch);

// MARK: - Budget

/// Arms the budget for one call: at most `instructions` VM instructions, until `seconds` of wall clock pass,
/// and the state's memory limit. A script's own pcall cannot catch a kill. The deadline counts from `now`
/// (sb_clock seconds) when it is positive, else from a reading of the clock taken here: a caller that has
/// just read the clock passes its reading rather than have it read again.
void sb_budget_begin(lua_State *L, int64_t instructions, double seconds, double now);
/// Disarms the budget and returns why the call was killed (SB_KILL_*), or SB_KILL_NONE.
int sb_budget_end(lua_State *L);
/// Instructions left in the armed budget (may be negative after a kill).
int64_t sb_budget_instructions_left(lua_State *L);
/// Seconds left now before the deadline sb_budget_begin set (negative once it has passed); the deadline
/// stays until the next sb_budget_begin. The clock's reading it took is kept: sb_budget_last_clock.
double sb_budget_seconds_left(lua_State *L);
/// The clock's reading the last sb_budget_seconds_left took (sb_clock seconds; 0 before any).
double sb_budget_last_clock(lua_State *L);
/// CLOCK_MONOTONIC in seconds: the clock budgets' deadlines are read from.
double sb_clock(void);
/// Bytes the state currently holds.
size_t sb_memory_used(lua_State *L);
/// Changes the memory cap (bytes) used by later budgeted calls.
void sb_set_memory_limit(lua_State *L, size_t limit);
size_t sb_memory_limit(lua_State *L);
/// Runs a full garbage collection that leaves the collector generational, with its next young collection set
/// from the memory in use (budget.c).
void sb_collect_garbage(lua_State *L);

// MARK: - Sandbox

/// Opens the allow-listed libraries into a template kept in the registry, with the sandbox's own load,
/// pcall, xpcall, setmetatable, collectgarbage and coroutine.resume/close. Locks the string metatable.
/// Stack effect: none. Returns 0 on success, or a Lua status code on failure.
int sb_open_sandbox(lua_State *L);
/// Pushes a new environment table: private copies of every library, `_G` pointing at itself, a `load` bound
/// to it, and a metatable that makes reading an undefined global an error naming it.
/// Stack effect: +1. Returns 0 on success, or a Lua status code (the error message is then pushed instead).
int sb_new_environment(lua_State *L);
/// Loads a text chunk (binary chunks are refused) and sets its _ENV to the table at `env_index`.
/// Stack effect: +1 (the function, or the error message). Returns a Lua status code.
int sb_load_text(lua_State *L, const char *source, size_t length, const char *chunkname, int env_index);

/// Pushes the template every new environment copies, so the host can add globals to it. Stack effect: +1.
void sb_push_template(lua_State *L);
/// Pops a table of module sources ({name = {source = "...", chunk = "@path"}}) and pushes a `require`
/// that loads those modules (only) in environments of their own, once per state. Stack effect: 0.
void sb_push_require(lua_State *L);
/// Pushes json.array (kind 1) or json.object (kind 2): marks a table (or a new one) and returns it. +1.
void sb_push_marker_function(lua_State *L, int kind);

// MARK: - Calls

/// Calls the function below `nargs` arguments under lua_pcall with a traceback message handler.
/// Stack effect: -(nargs + 1), then +nresults on success or +1 (the message with its traceback) on error.
int sb_pcall_traceback(lua_State *L, int nargs, int nresults);
/// Pushes a C closure that calls the host dispatcher with `box`. Stack effect: +1.
void sb_push_host_function(lua_State *L, void *box);

/// Marks a thread as one the host created to run rule code: only such threads may suspend on host calls.
void sb_mark_host_thread(lua_State *thread);
/// Whether the running thread is a host-created one (not main, not a coroutine the script created).
int sb_is_host_thread(lua_State *L);
/// The line a thread's entry function (its deepest frame) is at, or 0 when unknown. Read after an error
/// (the failed thread's frames are still there). No stack effect.
int sb_entry_line(lua_State *thread);
/// Whether the values at `index` (the host sentinel) and above it make a host suspension.
int sb_is_host_suspension(lua_State *L, int index);

/// Reads the first byte of a state or thread, so that AddressSanitizer (`make test`'s ASan step) reports a
/// closed one at the Swift/Lua boundary: Debian's liblua5.4 is not instrumented. Costs one load otherwise.
void sb_touch(lua_State *L);

/// Pushes "chunk:line:" onto L for the innermost Lua frame of `thread` that has a current line (after a
/// failed lua_resume the thread's stack is not unwound, so this is where it failed), and returns 1; returns
/// 0 and pushes nothing when there is none. Errors raised by the allocator (memory) carry no position of
/// their own: this gives them one. Call outside a budget (it allocates). Stack effect on L: +1 or 0.
int sb_push_position(lua_State *L, lua_State *thread);

// MARK: - Values

/// Pushes the JSON null sentinel (a light userdata whose tostring is "null"). Stack effect: +1.
void sb_push_null(lua_State *L);
int sb_is_null(lua_State *L, int index);
/// Marks the table at `index` as a JSON array (kind 1) or object (kind 2). Stack effect: none.
void sb_mark_table(lua_State *L, int index, int kind);
/// Returns 1 when the table at `index` is marked as an array, 2 as an object, 0 when it is not marked.
int sb_table_marker(lua_State *L, int index);

// MARK: - Lazy event tables (lazy.c)

/// A growable buffer the shim owns, for the bytes of one string the host describes.
typedef struct sb_lazy_scratch {
    char *bytes;
    size_t capacity;
} sb_lazy_scratch;

#define SB_ITEM_NULL 0
#define SB_ITEM_FALSE 1
#define SB_ITEM_TRUE 2
#define SB_ITEM_INTEGER 3
#define SB_ITEM_NUMBER 4
#define SB_ITEM_STRING 5
#define SB_ITEM_EMPTY_OBJECT 6
#define SB_ITEM_OBJECT 7
#define SB_ITEM_ARRAY 8

/// One value of a payload, as the host describes it: a scalar, a string (its bytes copied into the item's
/// scratch with sb_lazy_item_reserve), or an object or array to be opened with `child`.
typedef struct sb_lazy_item {
    int kind;  // SB_ITEM_*
    int64_t integer;
    double number;
    const char *bytes;
    size_t length;  // a string's bytes; an array's elements; an object's members
    sb_lazy_scratch *scratch;
} sb_lazy_item;

/// What `at` returns for a member hidden by another of the same key.
#define SB_LAZY_HIDDEN 2

/// How the shim reads a payload `box` (an object or an array the host keeps alive). None of these may call
/// Lua. Positions start at 0.
typedef struct sb_lazy_callbacks {
    /// The position of the member called `key` in the object `box`, its value in *value (when not NULL); -1
    /// when absent. `hint` is where it probably is (-1: no idea).
    long (*find)(void *box, const char *key, size_t length, long hint, sb_lazy_item *value);
    /// The member (object: with its key, when `key` is not NULL) or element (array) at `position`, in *key
    /// and *value; 0 past the end; SB_LAZY_HIDDEN for a member another member of the same key hides (find
    /// never returns it: the host's added fields hide the payload's).
    int (*at)(void *box, long position, sb_lazy_item *key, sb_lazy_item *value);
    /// A new reference (+1) to the object or array at `position` of `box`, as a box of its own.
    void *(*child)(void *box, long position);
    /// Gives back a reference to a box.
    void (*release)(void *box);
} sb_lazy_callbacks;

/// Sets how payloads are read. Set once per process, before any lazy table is made.
void sb_set_lazy_callbacks(const sb_lazy_callbacks *callbacks);
/// Room for `length` bytes in the item's scratch; sets item->bytes and item->length. Returns the bytes.
char *sb_lazy_item_reserve(sb_lazy_item *item, size_t length);
/// Pushes a lazy table over the object `box` of `count` members (positions, hidden ones included), taking
/// over one reference to it. Call outside a budget. Stack effect: +1.
void sb_push_lazy_object(lua_State *L, void *box, long count);
/// Sets every payload field the lazy table at `index` lacks and makes it a plain table; no-op for any other
/// value. May raise (the stack or memory running out): from C only. Stack effect: none.
void sb_lazy_fill(lua_State *L, int index);
/// sb_lazy_fill under lua_pcall, for Swift: returns LUA_OK, or the error status (nothing left on the stack).
int sb_lazy_fill_protected(lua_State *L, int index);

// MARK: - Macro re-exports

static inline int sb_registry_index(void) { return LUA_REGISTRYINDEX; }
static inline int sb_upvalue_index(int i) { return lua_upvalueindex(i); }
static inline void sb_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline void sb_newtable(lua_State *L) { lua_newtable(L); }
static inline const char *sb_tolstring(lua_State *L, int index, size_t *length) {
    return lua_tolstring(L, index, length);
}
static inline lua_Integer sb_tointeger(lua_State *L, int index) { return lua_tointegerx(L, index, NULL); }
static inline lua_Number sb_tonumber(lua_State *L, int index) { return lua_tonumberx(L, index, NULL); }
static inline void sb_insert(lua_State *L, int index) { lua_insert(L, index); }
static inline void sb_remove(lua_State *L, int index) { lua_remove(L, index); }
static inline int sb_ref(lua_State *L) { return luaL_ref(L, LUA_REGISTRYINDEX); }
static inline void sb_unref(lua_State *L, int ref) { luaL_unref(L, LUA_REGISTRYINDEX, ref); }
static inline int sb_getref(lua_State *L, int ref) { return lua_rawgeti(L, LUA_REGISTRYINDEX, ref); }
/// Pops the top value into the registry slot `ref` (made by `sb_ref`), replacing what it held.
static inline void sb_setref(lua_State *L, int ref) { lua_rawseti(L, LUA_REGISTRYINDEX, ref); }

#endif
