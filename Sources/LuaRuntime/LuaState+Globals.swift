import CLua
import CLuaShim
public import JSONCore

/// What the host can put into a Lua environment.
public indirect enum HostValue {
    case value(JSONValue)
    case function(HostFunction)
    case suspending(SuspendingHostFunction)
    /// `json.array(t)` / `json.object(t)`: mark a table (or a new one) so it converts as a list / an object.
    case arrayMarker
    case objectMarker
    case table([String: HostValue])
}

extension LuaState {
    /// Adds a global to every environment created from now on (each gets its own copy of a table).
    /// Stack effect: none.
    public func installGlobal(_ name: String, _ value: HostValue) throws(LuaError) {
        sb_push_template(L)
        defer { sb_pop(L, 1) }
        try push(value, name: name)
        stack.setField(-2, name)
    }

    /// Sets a global in one environment. Stack effect: none.
    public func setGlobal(_ name: String, _ value: HostValue, in environment: LuaReference) throws(LuaError) {
        push(environment)
        defer { sb_pop(L, 1) }
        try push(value, name: name)
        stack.setField(-2, name)
    }

    /// Installs `require` in every environment created from now on. It loads only these modules (by dotted
    /// name, such as `lib.phone`), each once per state, in an environment of its own.
    /// Stack effect: none.
    public func installRequire(modules: [String: (source: String, chunkName: String)]) throws(LuaError) {
        var table = JSONObject()
        for (name, module) in modules.sorted(by: { $0.key < $1.key }) {
            table[name] = ["source": .string(module.source), "chunk": .string("@" + module.chunkName)]
        }
        sb_push_template(L)
        defer { sb_pop(L, 1) }
        try stack.push(.object(table), maxDepth: 4)
        sb_push_require(L)
        stack.setField(-2, "require")
    }

    /// Pushes a host value. Stack effect: +1 (nothing on error).
    func push(_ value: HostValue, name: String) throws(LuaError) {
        guard lua_checkstack(L, 3) != 0 else { throw LuaError(.conversion, "Lua stack exhausted") }
        switch value {
        case .value(let v): try stack.push(v, maxDepth: limits.maxValueDepth)
        case .function(let f): pushHostFunction(name: name, .values(f))
        case .suspending(let f): pushHostFunction(name: name, .suspending(f))
        case .arrayMarker: sb_push_marker_function(L, 1)
        case .objectMarker: sb_push_marker_function(L, 2)
        case .table(let members):
            lua_createtable(L, 0, Int32(clamping: members.count))
            for (key, member) in members.sorted(by: { $0.key < $1.key }) {
                do { try push(member, name: "\(name).\(key)") } catch {
                    sb_pop(L, 1)
                    throw error
                }
                stack.setField(-2, key)
            }
        }
    }

    // MARK: Reading tables the host did not make

    /// The string keys of a referenced table with the Lua type of each value; other keys are listed as
    /// "[key]" so callers can report them. Empty when the reference is not a table. Stack effect: none.
    public func fieldTypes(of table: LuaReference) -> [(key: String, type: String)] {
        push(table)
        defer { sb_pop(L, 1) }
        guard lua_type(L, -1) == LUA_TTABLE else { return [] }
        var out: [(String, String)] = []
        lua_pushnil(L)
        while lua_next(L, -2) != 0 {
            let type = String(cString: lua_typename(L, lua_type(L, -1)))
            let key: String
            if lua_type(L, -2) == LUA_TSTRING {
                key = stack.string(at: -2) ?? ""
            } else if lua_type(L, -2) == LUA_TNUMBER, lua_isinteger(L, -2) != 0 {
                key = "[\(sb_tointeger(L, -2))]"
            } else {
                key = "[\(String(cString: lua_typename(L, lua_type(L, -2))))]"
            }
            out.append((key, type))
            sb_pop(L, 1)
        }
        return out
    }

    /// A reference to `table[key]` (raw), or nil when that is nil. Stack effect: none.
    public func field(_ key: String, of table: LuaReference) -> LuaReference? {
        push(table)
        guard lua_type(L, -1) == LUA_TTABLE else {
            sb_pop(L, 1)
            return nil
        }
        stack.pushString(key)
        lua_rawget(L, -2)
        sb_remove(L, -2)
        if lua_type(L, -1) == LUA_TNIL {
            sb_pop(L, 1)
            return nil
        }
        return popReference()
    }

    /// The referenced value converted to a `JSONValue`. Stack effect: none.
    public func value(of reference: LuaReference) throws(LuaError) -> JSONValue {
        push(reference)
        defer { sb_pop(L, 1) }
        return try stack.value(at: -1, maxDepth: limits.maxValueDepth)
    }

    /// The line where a referenced Lua function is defined, when it is one. Stack effect: none.
    public func lineDefined(_ function: LuaReference) -> Int? {
        push(function)
        guard lua_type(L, -1) == LUA_TFUNCTION else {
            sb_pop(L, 1)
            return nil
        }
        var info = lua_Debug()
        guard lua_getinfo(L, ">S", &info) != 0, info.linedefined > 0 else { return nil }
        return Int(info.linedefined)
    }
}
