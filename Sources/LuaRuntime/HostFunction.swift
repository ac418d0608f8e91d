import CLua
import CLuaShim
public import JSONCore

/// A Swift function callable from Lua. It receives the arguments converted to values and returns results,
/// or throws: the error's message is raised in Lua (by the C trampoline, never by Swift). A `.null` result
/// is `nil` in Lua (nulls nested in tables stay `json.null`).
public typealias HostFunction = (HostArguments) throws -> [JSONValue]

/// A Swift function that suspends the calling coroutine: it returns a request, the coroutine yields it to
/// whoever resumes it (`LuaState.resume`), and the values given to the next resume become the call's results.
/// Usable only from code running in a coroutine started with `LuaState.startCoroutine`.
public typealias SuspendingHostFunction = (HostArguments) throws -> JSONValue

/// The arguments of one host-function call, with checks that produce Lua-style messages.
public struct HostArguments: Sendable {
    /// The function's name as scripts see it (`json.encode`), for messages.
    public let functionName: String
    public let values: [JSONValue]

    public init(functionName: String, values: [JSONValue]) {
        self.functionName = functionName
        self.values = values
    }

    public var count: Int { values.count }

    /// Argument `position` (1-based), `.null` when absent.
    public subscript(position: Int) -> JSONValue {
        position >= 1 && position <= values.count ? values[position - 1] : .null
    }

    /// Argument `position` as a string, or a "bad argument" error.
    public func string(_ position: Int) throws(HostFunctionError) -> String {
        if case .string(let s) = self[position] { return s }
        throw badArgument(position, expected: "string")
    }

    /// A "bad argument #n to 'name' (expected, got …)" error.
    public func badArgument(_ position: Int, expected: String) -> HostFunctionError {
        let got = position <= values.count ? self[position].typeName : "no value"
        return HostFunctionError("bad argument #\(position) to '\(functionName)' (\(expected) expected, got \(got))")
    }
}

/// An error a host function raises in Lua, with a message that says what to fix.
public struct HostFunctionError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Keeps a host function alive for its state; Lua holds an unretained pointer to it.
final class HostFunctionBox {
    enum Body {
        case values(HostFunction)
        case suspending(SuspendingHostFunction)
    }
    let name: String
    let body: Body
    let maxDepth: Int

    init(name: String, body: Body, maxDepth: Int) {
        self.name = name
        self.body = body
        self.maxDepth = maxDepth
    }
}

extension LuaState {
    /// Pushes a C closure that calls `body` through the trampoline. Stack effect: +1.
    func pushHostFunction(name: String, _ body: HostFunctionBox.Body) {
        let box = HostFunctionBox(name: name, body: body, maxDepth: limits.maxValueDepth)
        hostFunctions.append(box)
        sb_push_host_function(L, Unmanaged.passUnretained(box).toOpaque())
    }

    /// Registers the one dispatcher every trampoline calls. Runs once per process.
    static let installDispatch: Void = {
        sb_set_host_dispatch(hostDispatch)
    }()
}

/// Called by the C trampoline with the host function's box. Returns a result count, or SB_RAISE after pushing
/// the error message (the trampoline raises it). Never raises itself.
private func hostDispatch(_ L: OpaquePointer?, _ box: UnsafeMutableRawPointer?) -> Int32 {
    guard let L, let box else { return SB_RAISE }
    // The state keeps the box alive (`LuaState.hostFunctions`) for longer than any call into it: borrowed for the
    // call, with no retain and release of it (`takeUnretainedValue` made a strong reference for the call).
    return Unmanaged<HostFunctionBox>.fromOpaque(box)._withUnsafeGuaranteedRef { dispatch(L, to: $0) }
}

private func dispatch(_ L: OpaquePointer, to function: HostFunctionBox) -> Int32 {
    let stack = LuaStack(L: L)
    let count = stack.top
    do {
        var values: [JSONValue] = []
        values.reserveCapacity(Int(count))
        if count > 0 {
            for i in 1...count {
                values.append(try stack.value(at: i, maxDepth: function.maxDepth, root: "argument #\(i)"))
            }
        }
        let arguments = HostArguments(functionName: function.name, values: values)
        let results: [JSONValue]
        switch function.body {
        case .values(let body):
            results = try body(arguments)
        case .suspending(let body):
            // The function checks its own arguments and context first: its errors say more than ours.
            let request = try body(arguments)
            guard sb_is_host_thread(L) != 0 else {
                throw HostFunctionError(
                    "\(function.name) must be called from the rule's own code, not while a file is loading nor "
                        + "inside a coroutine the rule created")
            }
            guard lua_isyieldable(L) != 0 else {
                throw HostFunctionError(
                    "\(function.name) cannot wait for a result here: call it from the rule's own code, not inside "
                        + "a metamethod, a table.sort comparator, a string.gsub callback or a module's top level")
            }
            guard lua_checkstack(L, 2) != 0 else { throw HostFunctionError("\(function.name): Lua stack exhausted") }
            try stack.push(request, maxDepth: function.maxDepth)
            return SB_SUSPEND
        }
        guard lua_checkstack(L, Int32(clamping: results.count + 1)) != 0 else {
            throw HostFunctionError("\(function.name): too many results")
        }
        for (i, r) in results.enumerated() {
            if r == .null {  // a missing result is nil to Lua; json.null appears only inside tables
                lua_pushnil(L)
                continue
            }
            do { try stack.push(r, maxDepth: function.maxDepth) } catch {
                sb_pop(L, Int32(i))
                throw error
            }
        }
        return Int32(results.count)
    } catch let error as LuaError {
        stack.pushString("\(function.name): \(error.message)")
        return SB_RAISE
    } catch let error as HostFunctionError {
        stack.pushString(error.message)
        return SB_RAISE
    } catch {
        stack.pushString("\(function.name): \(error)")
        return SB_RAISE
    }
}
