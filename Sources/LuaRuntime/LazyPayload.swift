import CLua
import CLuaShim
import JSONCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The Swift side of a lazy event table (CLuaShim's lazy.c): the payload an `event` table reads its fields
/// from when a rule first asks for them. A box per object or array opened; Lua holds one reference to it
/// (released by a userdata's __gc) for as long as the table can still ask.
///
/// The callbacks below are what the shim calls. They read Swift values and copy bytes into the shim's
/// buffers, and never call Lua: an error raised by Lua must not unwind a Swift frame.
final class LazyPayload {
    enum Content {
        case object(JSONObject)
        case array([JSONValue])
    }

    let content: Content
    /// Members an object's table has besides its own (the fields the host adds to an event), at positions
    /// after them; one of them hides an own member of the same key.
    let extra: [JSONObject.Member]

    init(_ content: Content, extra: [JSONObject.Member] = []) {
        self.content = content
        self.extra = extra
        #if DEBUG
            Self.liveOnThisThread += 1
        #endif
    }

    #if DEBUG
        /// Payloads made minus payloads freed on the calling thread, for tests that check that Lua gives every
        /// one back (debug builds only). Per thread, so that tests running at the same time do not mix: a
        /// state's payloads are made and freed on the thread using the state.
        static var liveOnThisThread: Int {
            get { Int(bitPattern: pthread_getspecific(liveKey)) }
            set { pthread_setspecific(liveKey, UnsafeRawPointer(bitPattern: newValue)) }
        }

        private static let liveKey: pthread_key_t = {
            var key = pthread_key_t()
            pthread_key_create(&key, nil)
            return key
        }()

        deinit { Self.liveOnThisThread -= 1 }
    #endif

    /// Registers the callbacks with the shim. Runs once per process.
    static let installCallbacks: Void = {
        var callbacks = sb_lazy_callbacks(find: lazyFind, at: lazyAt, child: lazyChild, release: lazyRelease)
        sb_set_lazy_callbacks(&callbacks)
    }()

    /// Describes `value` in `item`: a scalar, a string's bytes, or the kind and size of an object or array.
    static func describe(_ value: JSONValue, in item: UnsafeMutablePointer<sb_lazy_item>) {
        switch value {
        case .null: item.pointee.kind = SB_ITEM_NULL
        case .bool(let b): item.pointee.kind = b ? SB_ITEM_TRUE : SB_ITEM_FALSE
        case .int(let i):
            item.pointee.kind = SB_ITEM_INTEGER
            item.pointee.integer = i
        case .double(let d):
            item.pointee.kind = SB_ITEM_NUMBER
            item.pointee.number = d
        case .string(let s): copy(s, into: item)
        case .bytes(let b):
            item.pointee.kind = SB_ITEM_STRING
            b.withUnsafeBytes { copy($0, into: item) }
        case .object(let o):
            item.pointee.kind = o.isEmpty ? SB_ITEM_EMPTY_OBJECT : SB_ITEM_OBJECT
            item.pointee.length = o.count
        case .array(let a):
            item.pointee.kind = SB_ITEM_ARRAY
            item.pointee.length = a.count
        }
    }

    static func copy(_ s: String, into item: UnsafeMutablePointer<sb_lazy_item>) {
        item.pointee.kind = SB_ITEM_STRING
        if s.utf8.withContiguousStorageIfAvailable({ copy(UnsafeRawBufferPointer($0), into: item) }) == nil {
            var native = s
            native.withUTF8 { copy(UnsafeRawBufferPointer($0), into: item) }
        }
    }

    static func copy(_ bytes: UnsafeRawBufferPointer, into item: UnsafeMutablePointer<sb_lazy_item>) {
        let target = sb_lazy_item_reserve(item, bytes.count)
        if let base = bytes.baseAddress, let target, !bytes.isEmpty { memcpy(target, base, bytes.count) }
    }

    /// The member at `position` of an object's payload: its own, then `extra`'s. nil past the end.
    func member(at position: Int, of object: JSONObject) -> JSONObject.Member? {
        if position < object.members.count { return object.members[position] }
        let added = position - object.members.count
        return added < extra.count ? extra[added] : nil
    }

    /// Whether an own member's key is one of `extra`'s (whose value the table has instead).
    func isHidden(_ key: String) -> Bool {
        extra.withUnsafeBufferPointer { added in
            for i in added.indices where added[i].key == key { return true }
            return false
        }
    }

    /// Whether `key`'s UTF-8 is exactly `bytes`.
    static func matches(_ key: String, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard key.utf8.count == bytes.count else { return false }
        return key.utf8.withContiguousStorageIfAvailable { stored in
            bytes.isEmpty || memcmp(stored.baseAddress!, bytes.baseAddress!, bytes.count) == 0
        } ?? key.utf8.elementsEqual(bytes)
    }
}

private func payload(_ box: UnsafeMutableRawPointer?) -> LazyPayload {
    Unmanaged<LazyPayload>.fromOpaque(box!).takeUnretainedValue()
}

private func lazyFind(
    _ box: UnsafeMutableRawPointer?, _ key: UnsafePointer<CChar>?, _ length: Int, _ hint: Int,
    _ value: UnsafeMutablePointer<sb_lazy_item>?
) -> Int {
    let lazy = payload(box)
    guard case .object(let object) = lazy.content, let key else { return -1 }
    let bytes = UnsafeRawBufferPointer(start: key, count: length)
    // The added fields first: they hide the object's own of the same key (and a hint may point at one).
    let added = lazy.extra.withUnsafeBufferPointer { extra -> Int in
        for i in extra.indices where LazyPayload.matches(extra[i].key, bytes) {
            if let value { LazyPayload.describe(extra[i].value, in: value) }
            return object.members.count + i
        }
        return -1
    }
    if added >= 0 { return added }
    return object.members.withUnsafeBufferPointer { members in
        // By index, not `firstIndex(where:)`: its closure copied each member out (a retain and a release).
        var position = -1
        if hint >= 0, hint < members.count, LazyPayload.matches(members[hint].key, bytes) {
            position = hint
        } else {
            for i in 0..<members.count where LazyPayload.matches(members[i].key, bytes) {
                position = i
                break
            }
        }
        if position >= 0, let value { LazyPayload.describe(members[position].value, in: value) }
        return position
    }
}

private func lazyAt(
    _ box: UnsafeMutableRawPointer?, _ position: Int, _ key: UnsafeMutablePointer<sb_lazy_item>?,
    _ value: UnsafeMutablePointer<sb_lazy_item>?
) -> Int32 {
    guard let value, position >= 0 else { return 0 }
    let lazy = payload(box)
    switch lazy.content {
    case .object(let object):
        guard let member = lazy.member(at: position, of: object) else { return 0 }
        if position < object.members.count, !lazy.extra.isEmpty, lazy.isHidden(member.key) {
            return SB_LAZY_HIDDEN
        }
        if let key { LazyPayload.copy(member.key, into: key) }
        LazyPayload.describe(member.value, in: value)
    case .array(let elements):
        guard position < elements.count else { return 0 }
        LazyPayload.describe(elements[position], in: value)
    }
    return 1
}

private func lazyChild(_ box: UnsafeMutableRawPointer?, _ position: Int) -> UnsafeMutableRawPointer? {
    let value: JSONValue
    let lazy = payload(box)
    switch lazy.content {
    case .object(let object): value = lazy.member(at: position, of: object)?.value ?? .null
    case .array(let elements): value = elements[position]
    }
    let content: LazyPayload.Content
    switch value {
    case .object(let o): content = .object(o)
    case .array(let a): content = .array(a)
    default: content = .array([])  // the shim asks only for objects and arrays
    }
    return Unmanaged.passRetained(LazyPayload(content)).toOpaque()
}

private func lazyRelease(_ box: UnsafeMutableRawPointer?) {
    guard let box else { return }
    Unmanaged<LazyPayload>.fromOpaque(box).release()
}
