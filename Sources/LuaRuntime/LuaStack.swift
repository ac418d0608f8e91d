import CLua
import CLuaShim
import JSONCore

/// Stack operations on one Lua thread (the main thread or a coroutine running a host function).
///
/// Every function here uses only API calls that cannot raise a Lua error except for out-of-memory, and the
/// allocator never fails under a Swift frame (CLuaShim's `in_host` and `enforcing` flags), so no longjmp can
/// cross these frames. Each function states its stack effect.
struct LuaStack {
    let L: OpaquePointer
    /// The owning state's cache of Lua strings (keys and short values), when this stack may use it.
    var strings: LuaStringCache.Table? = nil

    var top: Int32 { lua_gettop(L) }

    /// Pushes a Swift string's bytes. Stack effect: +1.
    func pushString(_ s: String) {
        if let done = s.utf8.withContiguousStorageIfAvailable({ b in
            lua_pushlstring(L, b.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, b.count)
        }) {
            _ = done
            return
        }
        var copy = s
        copy.withUTF8 { b in
            _ = lua_pushlstring(
                L, b.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, b.count)
        }
    }

    /// Pushes a string through the state's cache (`LuaStringCache`): kept there when it is a table `key`.
    /// Stack effect: +1.
    func pushString(_ s: String, key: Bool) {
        if let strings, strings.push(s, on: L, keep: key) { return }
        pushString(s)
    }

    /// `t[key] = top` without metamethods, for the table at `index`. Stack effect: -1.
    func setField(_ index: Int32, _ key: String) {
        let table = lua_absindex(L, index)
        pushString(key, key: true)
        sb_insert(L, -2)
        lua_rawset(L, table)
    }

    /// The string at `index`, when it is a string (numbers are not converted). Stack effect: none.
    func string(at index: Int32) -> String? {
        guard lua_type(L, index) == LUA_TSTRING else { return nil }
        var length = 0
        guard let p = sb_tolstring(L, index, &length) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self)
    }

    // MARK: Swift -> Lua

    /// Pushes a value as Lua: null as the `json.null` sentinel, arrays as tables marked as arrays, `{}` as a
    /// table marked as an object, integers as integers. Stack effect: +1 (nothing on error).
    /// - Throws: `LuaError.Kind.conversion` past `maxDepth` levels.
    func push(_ value: JSONValue, maxDepth: Int) throws(LuaError) {
        try push(value, depth: 0, maxDepth: maxDepth)
    }

    // Recursion is bounded by maxDepth (default 64), so the native stack is bounded too.
    private func push(_ value: JSONValue, depth: Int, maxDepth: Int) throws(LuaError) {
        switch value {
        case .null: sb_push_null(L)
        case .bool(let b): lua_pushboolean(L, b ? 1 : 0)
        case .int(let i): lua_pushinteger(L, i)
        case .double(let d): lua_pushnumber(L, d)
        case .string(let s): pushString(s, key: false)
        case .bytes(let b):
            b.withUnsafeBufferPointer { p in
                _ = lua_pushlstring(
                    L, p.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, p.count)
            }
        case .array(let elements):
            guard depth < maxDepth else { throw tooDeep(maxDepth) }
            guard lua_checkstack(L, 3) != 0 else { throw stackExhausted() }
            lua_createtable(L, Int32(clamping: elements.count), 0)
            var i: lua_Integer = 1
            for element in elements {
                do { try push(element, depth: depth + 1, maxDepth: maxDepth) } catch {
                    sb_pop(L, 1)
                    throw error
                }
                lua_rawseti(L, -2, i)
                i += 1
            }
            sb_mark_table(L, -1, 1)
        case .object(let object):
            try push(object, adding: [], depth: depth, maxDepth: maxDepth)
        }
    }

    /// Pushes an argument: a value, or an object with members set over it (see `LuaArgument`).
    /// Stack effect: +1 (nothing on error).
    func push(_ argument: LuaArgument, maxDepth: Int) throws(LuaError) {
        switch argument {
        case .value(let value): try push(value, depth: 0, maxDepth: maxDepth)
        case .object(let object, let extra):
            guard !object.isEmpty else { return try push(object, adding: extra, depth: 0, maxDepth: maxDepth) }
            guard lua_checkstack(L, 4) != 0 else { throw stackExhausted() }
            // Lazy: the payload's fields, and the added ones, become Lua values when the rule reads them (see
            // LazyPayload).
            sb_push_lazy_object(
                L, Unmanaged.passRetained(LazyPayload(.object(object), extra: extra)).toOpaque(),
                object.count + extra.count)
        }
    }

    /// An object as a table, then `extra`'s members set in it (replacing members of the same key).
    private func push(_ object: JSONObject, adding extra: [JSONObject.Member], depth: Int, maxDepth: Int)
        throws(LuaError)
    {
        guard depth < maxDepth else { throw tooDeep(maxDepth) }
        guard lua_checkstack(L, 4) != 0 else { throw stackExhausted() }
        lua_createtable(L, 0, Int32(clamping: object.count + extra.count))
        try set(object.members, depth: depth, maxDepth: maxDepth)
        try set(extra, depth: depth, maxDepth: maxDepth)
        if object.isEmpty, extra.isEmpty { sb_mark_table(L, -1, 2) }
    }

    /// Sets the members in the table on top. Stack effect: none; on error the table is popped too.
    private func set(_ members: [JSONObject.Member], depth: Int, maxDepth: Int) throws(LuaError) {
        for member in members {
            pushString(member.key, key: true)
            do { try push(member.value, depth: depth + 1, maxDepth: maxDepth) } catch {
                sb_pop(L, 2)
                throw error
            }
            lua_rawset(L, -3)
        }
    }

    // MARK: Lua -> Swift

    /// Reads the value at `index`. Tables become arrays when marked as arrays or when their keys are exactly
    /// 1…n; otherwise objects with their keys sorted (integer keys become strings; an empty unmarked table is
    /// an object).
    /// Stack effect: none.
    /// - Throws: `LuaError.Kind.conversion` for functions, coroutines, userdata, cycles, depth, or table keys
    ///   that are not strings or numbers; the message names the path (`payload.items[2].f`).
    /// `root` names the value in an error's path; it is built only for an error (a `"result #\(i)"` made for every
    /// value read was an allocation per rule result and per host function argument).
    func value(at index: Int32, maxDepth: Int, root: @autoclosure () -> String = "value") throws(LuaError)
        -> JSONValue
    {
        var ancestors: [UnsafeRawPointer] = []
        do {
            return try read(lua_absindex(L, index), depth: 0, maxDepth: maxDepth, ancestors: &ancestors)
        } catch {
            let path = root() + error.path.reversed().joined()
            throw LuaError(.conversion, "\(path): \(error.reason)")
        }
    }

    struct Failure: Error {
        var reason: String
        var path: [String] = []

        func adding(_ component: String) -> Self {
            var copy = self
            copy.path.append(component)
            return copy
        }
    }

    private func read(_ index: Int32, depth: Int, maxDepth: Int, ancestors: inout [UnsafeRawPointer]) throws(Failure)
        -> JSONValue
    {
        switch lua_type(L, index) {
        case LUA_TNIL, LUA_TNONE: return .null
        case LUA_TBOOLEAN: return .bool(lua_toboolean(L, index) != 0)
        case LUA_TNUMBER:
            if lua_isinteger(L, index) != 0 { return .int(sb_tointeger(L, index)) }
            return .double(sb_tonumber(L, index))
        case LUA_TSTRING:
            var length = 0
            let p = sb_tolstring(L, index, &length)!
            let buffer = UnsafeBufferPointer(
                start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: length)
            if let s = UTF8Validation.string(buffer) { return .string(s) }
            return .bytes(Array(buffer))
        case LUA_TLIGHTUSERDATA where sb_is_null(L, index) != 0:
            return .null
        case LUA_TTABLE:
            return try readTable(index, depth: depth, maxDepth: maxDepth, ancestors: &ancestors)
        default:
            let name = String(cString: lua_typename(L, lua_type(L, index)))
            throw Failure(reason: "a \(name) cannot be converted to a JSON value")
        }
    }

    private func readTable(_ index: Int32, depth: Int, maxDepth: Int, ancestors: inout [UnsafeRawPointer])
        throws(Failure)
        -> JSONValue
    {
        guard depth < maxDepth else { throw Failure(reason: "nested deeper than \(maxDepth) levels") }
        // A rule's event (or a part of it) not read in full: every field first. Under pcall: running out of
        // stack or memory there raises, and no error may unwind this Swift frame.
        guard sb_lazy_fill_protected(L, index) == LUA_OK else {
            throw Failure(reason: "could not read the event's fields (Lua ran out of stack or memory)")
        }
        let identity = lua_topointer(L, index)!
        if ancestors.contains(identity) { throw Failure(reason: "the table contains itself (a cycle)") }
        guard lua_checkstack(L, 4) != 0 else { throw Failure(reason: "Lua stack exhausted") }
        ancestors.append(identity)
        defer { ancestors.removeLast() }

        let marker = sb_table_marker(L, index)
        let length = Int(lua_rawlen(L, index))
        if marker == 1 {  // a marked array: its 1…n part
            var elements: [JSONValue] = []
            elements.reserveCapacity(length)
            for i in 0..<length {
                lua_rawgeti(L, index, lua_Integer(i + 1))
                defer { sb_pop(L, 1) }
                do {
                    elements.append(
                        try read(lua_gettop(L), depth: depth + 1, maxDepth: maxDepth, ancestors: &ancestors))
                } catch { throw error.adding("[\(i + 1)]") }
            }
            return .array(elements)
        }

        var members: [JSONObject.Member] = []
        // One allocation for the small tables rules usually return (growing from empty took three).
        members.reserveCapacity(8)
        var integerValues: [(Int64, JSONValue)] = []
        var onlyIntegers = true
        // Keys of a Lua table are distinct, but a number key's text may equal a string key's ([1] and "1").
        var numberKeys = false
        lua_pushnil(L)
        while lua_next(L, index) != 0 {
            // stack: key, value
            let keyType = lua_type(L, -2)
            var key: String
            var integerKey: Int64? = nil
            if keyType == LUA_TSTRING {
                key = string(at: -2) ?? ""
                onlyIntegers = false
            } else if keyType == LUA_TNUMBER, lua_isinteger(L, -2) != 0 {
                let i = sb_tointeger(L, -2)
                integerKey = i
                key = String(i)
                numberKeys = true
            } else if keyType == LUA_TNUMBER {
                key = JSONWriter.formatDouble(sb_tonumber(L, -2))
                onlyIntegers = false
                numberKeys = true
            } else {
                let name = String(cString: lua_typename(L, keyType))
                sb_pop(L, 2)
                throw Failure(
                    reason: "a table key of type \(name) cannot be converted (keys must be strings or numbers)")
            }
            let element: JSONValue
            do { element = try read(lua_gettop(L), depth: depth + 1, maxDepth: maxDepth, ancestors: &ancestors) } catch
            {
                sb_pop(L, 2)
                throw error.adding(integerKey != nil ? "[\(key)]" : ".\(key)")
            }
            sb_pop(L, 1)
            if let integerKey, onlyIntegers { integerValues.append((integerKey, element)) }
            members.append(JSONObject.Member(key: key, value: element))
        }
        if onlyIntegers, !members.isEmpty, members.count == length,
            integerValues.allSatisfy({ $0.0 >= 1 && $0.0 <= Int64(length) })
        {
            var elements = [JSONValue](repeating: .null, count: length)
            for (i, v) in integerValues { elements[Int(i) - 1] = v }
            return .array(elements)
        }
        if members.count > 1, integerValues.count == members.count {
            // A sparse integer-keyed table: keep its keys in numeric order for readability.
            members.sort { (Int64($0.key) ?? 0) < (Int64($1.key) ?? 0) }
        } else if members.count > 1 {
            // Lua's hash order changes from run to run; sorted keys make output and diffs stable.
            members.sort { $0.key < $1.key }
        }
        // Only string keys: already distinct, no need to look for repeats.
        return .object(numberKeys ? JSONObject(members) : JSONObject(uniqueMembersUnchecked: members))
    }

    private func tooDeep(_ maxDepth: Int) -> LuaError {
        LuaError(.conversion, "value nested deeper than \(maxDepth) levels")
    }

    private func stackExhausted() -> LuaError {
        LuaError(.conversion, "Lua stack exhausted while converting a value")
    }
}
