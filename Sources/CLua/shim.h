// Debian's Lua 5.4 headers; the include path comes from `pkg-config --cflags lua5.4`.
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
