public import JSONCore

/// Reads Kazoo's `application/x-www-form-urlencoded` bodies and GET query strings (delivery.md §2):
/// `a[b][c]=v` nests objects, `k[]=v` appends to a list, list elements that are JSON objects were
/// JSON-encoded by Kazoo and are decoded back, empty `&&` segments are skipped, `+` is a space, and a
/// literal `?` separates pairs like `&` (Kazoo appends `?payload` even to a URI that already has a query).
/// Every value is a string; `EventDecoder` coerces known fields to their types.
///
/// It reads the body's bytes in place, as `JSONReader` does: a key or value with nothing to decode becomes its
/// String straight from the body, one with `%XX` or `+` is decoded into one scratch buffer for the whole body,
/// keys come from `keys` when they are known field names, and short ASCII values from the thread's recent ones
/// (`ValueStrings`). The pairs go into a tree of member lists (`FormTree`), made into the event's objects once at
/// the end. (The decoder it replaced built a tree of class instances, a String and an array for every part of
/// every key, and a copy of every key and value: 187,364 instructions for `make bench`'s event posted as a form,
/// against 48,443 for it posted as JSON; BENCHMARKS.md.)
public enum FormDecoder {
    /// Decodes pairs into a tree of objects, lists and strings.
    /// - Parameter keys: the interner whose shared Strings stand for known keys (`EventCatalog`'s field names).
    /// - Throws: `EventDecodingError` for bad percent-encoding, invalid UTF-8 or exceeded limits.
    public static func decode(_ bytes: some Collection<UInt8>, limits: JSONLimits = .default, keys: KeyInterner? = nil)
        throws(EventDecodingError) -> JSONObject
    {
        let read = bytes.withContiguousStorageIfAvailable { buffer in
            Result { () throws(EventDecodingError) in try decode(buffer: buffer, limits: limits, keys: keys) }
        }
        if let read { return try read.get() }
        return try Array(bytes).withUnsafeBufferPointer { (buffer) throws(EventDecodingError) in
            try decode(buffer: buffer, limits: limits, keys: keys)
        }
    }

    private static func decode(buffer body: UnsafeBufferPointer<UInt8>, limits: JSONLimits, keys: KeyInterner?)
        throws(EventDecodingError) -> JSONObject
    {
        guard !body.isEmpty else { return JSONObject() }
        // Decoded bytes are never more than encoded ones: a pair's key and value fit in it side by side.
        let scratch = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: body.count)
        defer { scratch.deallocate() }
        // Room for the parts of any key that passes the depth check: at most `maxDepth` of them, and at most one
        // more than the key has bytes.
        let parts = UnsafeMutableBufferPointer<Range<Int>>.allocate(
            capacity: max(1, min(limits.maxDepth, body.count + 1)))
        defer { parts.deallocate() }
        var reader = PairReader(
            body: body, scratch: scratch, parts: parts, limits: limits, keys: keys, values: ValueStrings.current)
        var pairs = 0
        var start = 0
        while start <= body.count {
            let end = ByteSearch.first(UInt8(ascii: "&"), UInt8(ascii: "?"), in: body, from: start)
            if start != end {
                pairs += 1
                if pairs > limits.maxKeys {
                    throw EventDecodingError.limit("too many form fields (limit \(limits.maxKeys))")
                }
                try reader.pair(start..<end)
            }
            start = end + 1
        }
        return reader.tree.result(object: 0)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A list element: Kazoo JSON-encodes objects inside lists, so one that reads as a JSON object is one.
    static func listElement(_ value: String, limits: JSONLimits) -> JSONValue {
        guard value.utf8.first == UInt8(ascii: "{") else { return .string(value) }
        if let parsed = try? JSONReader.parse(value.utf8, limits: limits), case .object = parsed { return parsed }
        return .string(value)
    }
}

/// One body's pairs, read one at a time into `tree`.
private struct PairReader {
    let body: UnsafeBufferPointer<UInt8>
    let scratch: UnsafeMutableBufferPointer<UInt8>
    let limits: JSONLimits
    let keys: KeyInterner?
    let values: ValueStrings
    var tree: FormTree
    /// The current key's parts, as ranges of its bytes (`split`): room for as many as a key may have (more
    /// are counted in `partCount`, not kept, and refused).
    let parts: UnsafeMutableBufferPointer<Range<Int>>
    var partCount = 0

    init(
        body: UnsafeBufferPointer<UInt8>, scratch: UnsafeMutableBufferPointer<UInt8>,
        parts: UnsafeMutableBufferPointer<Range<Int>>, limits: JSONLimits, keys: KeyInterner?, values: ValueStrings
    ) {
        self.body = body
        self.scratch = scratch
        self.parts = parts
        self.limits = limits
        self.keys = keys
        self.values = values
        tree = FormTree(inside: keys?.slot(inside: KeyInterner.document) ?? -1)
    }

    /// Reads the pair at `range` of the body (not empty) into the tree.
    mutating func pair(_ range: Range<Int>) throws(EventDecodingError) {
        let equals = ByteSearch.first(
            UInt8(ascii: "="), UInt8(ascii: "="), in: UnsafeBufferPointer(rebasing: body[..<range.upperBound]),
            from: range.lowerBound)
        let rawKey = UnsafeBufferPointer(rebasing: body[range.lowerBound..<equals])
        let rawValue = UnsafeBufferPointer(rebasing: body[min(equals + 1, range.upperBound)..<range.upperBound])
        // The key's bytes and then the value's, each in the body when it has nothing to decode, else in `scratch`.
        let key = try Self.text(rawKey, scratch: scratch.baseAddress!, at: range.lowerBound)
        if !key.ascii, UTF8Validation.firstInvalidOffset(key.bytes) != nil {
            throw EventDecodingError.invalidUTF8("a form key is not valid UTF-8", offset: range.lowerBound)
        }
        split(key.bytes)
        if partCount > limits.maxDepth {
            let text = String(decoding: key.bytes, as: UTF8.self).prefix(80)
            throw EventDecodingError.limit("form key \(text) nests deeper than \(limits.maxDepth) levels")
        }
        let value = try Self.text(
            rawValue, scratch: scratch.baseAddress! + key.decodedCount, at: range.lowerBound + rawKey.count + 1)
        if value.bytes.count > limits.maxStringBytes {
            let name = String(decoding: UnsafeBufferPointer(rebasing: key.bytes[parts[0]]), as: UTF8.self)
            throw EventDecodingError.limit("form value of \(name) is longer than \(limits.maxStringBytes) bytes")
        }
        let string: String
        if value.ascii {
            string = values.string(value.bytes)
        } else if UTF8Validation.firstInvalidOffset(value.bytes) == nil {
            string = String(decoding: value.bytes, as: UTF8.self)
        } else {
            throw EventDecodingError.invalidUTF8(
                "the value of \(String(decoding: key.bytes, as: UTF8.self)) is not valid UTF-8",
                offset: range.lowerBound)
        }
        insert(key.bytes, value: string)
    }

    /// Splits the key's bytes `a[b][]` into the ranges of "a", "b" and "" (`parts`); a key with unbalanced
    /// brackets, or starting with one, or with text after its last `]`, is one part, taken literally.
    ///
    /// On the key's UTF-8 bytes, as Kazoo's encoder writes them: a bracket is a bracket whatever follows it. The
    /// brackets are ASCII, so the parts between them are whole UTF-8.
    mutating func split(_ key: UnsafeBufferPointer<UInt8>) {
        partCount = 0
        let open = ByteSearch.first(UInt8(ascii: "["), UInt8(ascii: "["), in: key, from: 0)
        guard open != 0, open < key.count else { return addPart(0..<key.count) }
        addPart(0..<open)
        var at = open
        while at < key.count {
            let close = ByteSearch.first(UInt8(ascii: "]"), UInt8(ascii: "]"), in: key, from: at + 1)
            guard key[at] == UInt8(ascii: "["), close < key.count else {
                partCount = 0
                return addPart(0..<key.count)
            }
            addPart((at + 1)..<close)
            at = close + 1
        }
    }

    private mutating func addPart(_ part: Range<Int>) {
        if partCount < parts.count { (parts.baseAddress! + partCount).initialize(to: part) }
        partCount += 1
    }

    /// Puts `value` where the key's parts lead, making the objects and lists on the way (and replacing what
    /// stood there of another kind): a part names a member of an object; an empty part after the first appends
    /// to a list.
    mutating func insert(_ key: UnsafeBufferPointer<UInt8>, value: String) {
        var object = 0
        var position = member(named: parts[0], of: key, in: 0)
        var index = 1
        while index < partCount {
            if parts[index].isEmpty {
                // `[]`: a new element at the end of the list here.
                var list: Int
                if let existing = FormTree.array(in: tree.objects[object].members[position].value) {
                    list = existing
                } else {
                    list = tree.newArray()
                    tree.set(object: object, position, to: FormTree.array(list))
                }
                while true {
                    index += 1
                    if index == partCount {
                        return tree.arrays[list].append(FormDecoder.listElement(value, limits: limits))
                    }
                    if !parts[index].isEmpty { break }
                    // `[][]`: the element is a list of its own.
                    let inner = tree.newArray()
                    tree.arrays[list].append(FormTree.array(inner))
                    list = inner
                }
                object = tree.newObject(inside: -1)
                tree.arrays[list].append(FormTree.object(object))
            } else if let existing = FormTree.object(in: tree.objects[object].members[position].value) {
                object = existing
            } else {
                // Predicted as the same key's object in JSON is.
                let owner = tree.objects[object].lastShared
                let made = tree.newObject(inside: owner >= 0 ? keys?.slot(inside: owner) ?? -1 : -1)
                tree.set(object: object, position, to: FormTree.object(made))
                object = made
            }
            position = member(named: parts[index], of: key, in: object)
            index += 1
        }
        tree.objects[object].members[position].value = .string(value)
    }

    /// The position of the member named by `part` of the key in object `object`, added (as null) when new: a key
    /// given again keeps its first place.
    mutating func member(named part: Range<Int>, of key: UnsafeBufferPointer<UInt8>, in object: Int) -> Int {
        tree.objects[object].member(named: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(key)[part]), keys)
    }

    /// A key's or value's bytes, decoded into `scratch` when they hold `%XX` or `+`, and whether they are ASCII.
    struct Text {
        var bytes: UnsafeBufferPointer<UInt8>
        var ascii: Bool
        /// How much of the scratch buffer it took.
        var decodedCount: Int
    }

    static func text(_ raw: UnsafeBufferPointer<UInt8>, scratch: UnsafeMutablePointer<UInt8>, at offset: Int)
        throws(EventDecodingError) -> Text
    {
        let (encoded, ascii) = ByteSearch.scan(raw)
        if !encoded { return Text(bytes: raw, ascii: ascii, decodedCount: 0) }
        // A `%XX` can make a byte that is not ASCII in bytes that are.
        let (count, decodedASCII) = try percentDecode(raw, into: scratch, at: offset)
        return Text(bytes: UnsafeBufferPointer(start: scratch, count: count), ascii: decodedASCII, decodedCount: count)
    }

    /// Decodes `%XX` to a byte and `+` to a space from `raw` into `out` (room for `raw.count`): the count written,
    /// and whether all were ASCII.
    /// `offset` is where `raw` starts in the body, for the error.
    static func percentDecode(_ raw: UnsafeBufferPointer<UInt8>, into out: UnsafeMutablePointer<UInt8>, at offset: Int)
        throws(EventDecodingError) -> (Int, Bool)
    {
        var i = 0
        var written = 0
        var all: UInt8 = 0
        while i < raw.count {
            let b = raw[i]
            if b == UInt8(ascii: "+") {
                out[written] = 0x20
            } else if b == UInt8(ascii: "%") {
                guard i + 2 < raw.count, let hi = FormDecoder.hexValue(raw[i + 1]),
                    let lo = FormDecoder.hexValue(raw[i + 2])
                else {
                    throw EventDecodingError.syntax("invalid percent-encoding (expected %XX)", offset: offset + i)
                }
                out[written] = hi << 4 | lo
                all |= hi << 4
                i += 2
            } else {
                out[written] = b
                all |= b
            }
            written += 1
            i += 1
        }
        return (written, all < 0x80)
    }
}

/// The objects and lists of a form body while its pairs arrive, in any order. Object 0 is the body.
///
/// Each object's members are already the event's (`JSONObject.Member`, searched as `JSONReader` searches an
/// object's keys, by `KeyIndex`), and an object or list inside one stands in its place as an `.int`: a form's
/// values are all strings (or objects, JSON-decoded from a list's elements), so no value read is one. `result`
/// puts the containers in place; an object holding none (`nested` false) is the event's object as it is.
private struct FormTree {
    struct Object {
        var members: [JSONObject.Member] = []
        var index = KeyIndex()
        /// Whether an object or list stands in a member.
        var nested = false

        /// The interner's slot predicting this object's first key (`KeyInterner.slot(inside:)`), and the
        /// interner's position of the key read last here (-1: none yet, or a key it does not hold).
        let inside: Int
        var lastShared = -1

        init(capacity: Int, inside: Int) {
            members.reserveCapacity(capacity)
            self.inside = inside
        }

        /// The position of the member whose key has the bytes `key`, added as null when new: a key given again
        /// keeps its first place. The key's String is the one `keys` shares when it holds the key.
        mutating func member(named key: UnsafeRawBufferPointer, _ keys: KeyInterner?) -> Int {
            let hash: UInt64
            if let keys {
                // The interner's slot predicting the key read next here.
                var slot = -1
                if inside >= 0, members.isEmpty {
                    slot = inside
                } else if inside >= 0, lastShared >= 0 {
                    slot = keys.slot(after: lastShared, within: inside)
                }
                let recognized = keys.recognize(key, slot: slot)
                if let (name, at) = recognized.shared { return position(of: name, hash: recognized.hash, shared: at) }
                hash = recognized.hash
            } else {
                hash = KeyTable<Int>.hash(bytes: key)
            }
            return position(of: String(decoding: key, as: UTF8.self), hash: hash, shared: -1)
        }

        /// The position of the member `key` (whose `KeyTable.hash` is `hash`, and its interner position `shared`),
        /// added as null when new.
        mutating func position(of key: String, hash: UInt64, shared: Int) -> Int {
            lastShared = shared
            if let found = index.find(hash, key, in: members) { return found }
            index.insert(key, hash: hash, before: members)
            members.append(JSONObject.Member(key: key, value: .null))
            return members.count - 1
        }
    }
    var objects: [Object]
    var arrays: [[JSONValue]] = []

    /// Object `id`'s and list `id`'s place in a member or an element.
    static func object(_ id: Int) -> JSONValue { .int(Int64(id)) }
    static func array(_ id: Int) -> JSONValue { .int(Int64(-1 - id)) }
    static func object(in value: JSONValue) -> Int? {
        if case .int(let id) = value, id >= 0 { Int(id) } else { nil }
    }
    static func array(in value: JSONValue) -> Int? {
        if case .int(let id) = value, id < 0 { Int(-1 - id) } else { nil }
    }

    /// `inside`: the interner's slot predicting the body's first key, -1 for none. Objects start with room for
    /// a Kazoo event's top-level keys (about 25 for a channel event), or a nested object's.
    init(inside: Int) { objects = [Object(capacity: 32, inside: inside)] }

    /// A new object, `inside` as for `init`.
    mutating func newObject(inside: Int) -> Int {
        objects.append(Object(capacity: 8, inside: inside))
        return objects.count - 1
    }

    mutating func newArray() -> Int {
        arrays.append([])
        return arrays.count - 1
    }

    /// Puts a container's place in a member.
    mutating func set(object: Int, _ position: Int, to place: JSONValue) {
        objects[object].members[position].value = place
        objects[object].nested = true
    }

    /// The object or list a place stands for, with the containers inside it, taken out of the tree (each is
    /// reached once: a container replaced by another is no longer in any member).
    mutating func result(_ value: JSONValue) -> JSONValue {
        guard case .int(let id) = value else { return value }
        if id >= 0 { return .object(result(object: Int(id))) }
        var elements: [JSONValue] = []
        swap(&elements, &arrays[Int(-1 - id)])
        for i in elements.indices {
            guard case .int = elements[i] else { continue }
            elements[i] = result(elements[i])
        }
        return .array(elements)
    }

    mutating func result(object id: Int) -> JSONObject {
        var members: [JSONObject.Member] = []
        swap(&members, &objects[id].members)
        if objects[id].nested {
            for i in members.indices {
                guard case .int = members[i].value else { continue }
                members[i].value = result(members[i].value)
            }
        }
        return JSONObject(uniqueMembersUnchecked: members)
    }
}

/// Searches of a body's bytes eight at a time. A byte at a time, finding a form's separators and checking its keys
/// and values cost about 14,600 instructions an event: `make bench`'s event as a form took 103,945 that way and
/// 89,336 with these (BENCHMARKS.md).
enum ByteSearch {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highs: UInt64 = 0x8080_8080_8080_8080

    /// The high bit of each byte of `word` equal to `byte`. Whether any is set is exact, and so is the lowest one
    /// set (a borrow can set a false bit only above a true one).
    @inline(__always)
    static func matches(_ word: UInt64, _ byte: UInt8) -> UInt64 {
        let x = word ^ (ones &* UInt64(byte))
        return (x &- ones) & ~x & highs
    }

    @inline(__always)
    static func word(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> UInt64 {
        UInt64(
            littleEndian: UnsafeRawPointer(bytes.baseAddress!).loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// The first position at or after `start` holding `a` or `b`, or `bytes.count` when there is none.
    static func first(_ a: UInt8, _ b: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var i = start
        while i + 8 <= bytes.count {
            let w = word(bytes, at: i)
            let found = matches(w, a) | matches(w, b)
            if found != 0 { return i + found.trailingZeroBitCount >> 3 }
            i += 8
        }
        while i < bytes.count, bytes[i] != a, bytes[i] != b { i += 1 }
        return i
    }

    /// Whether the bytes hold a `%` or a `+` (something to decode), and whether they are all ASCII.
    static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> (encoded: Bool, ascii: Bool) {
        var special: UInt64 = 0
        var all: UInt64 = 0
        var i = 0
        while i + 8 <= bytes.count {
            let w = word(bytes, at: i)
            special |= matches(w, UInt8(ascii: "%")) | matches(w, UInt8(ascii: "+"))
            all |= w
            i += 8
        }
        if i < bytes.count, bytes.count >= 8 {
            // The last bytes in one word that ends where they end (some checked twice, which changes nothing).
            let w = word(bytes, at: bytes.count - 8)
            special |= matches(w, UInt8(ascii: "%")) | matches(w, UInt8(ascii: "+"))
            all |= w
        } else {
            while i < bytes.count {
                let b = bytes[i]
                if b == UInt8(ascii: "%") || b == UInt8(ascii: "+") { special = 1 }
                all |= UInt64(b)
                i += 1
            }
        }
        return (special != 0, all & highs == 0)
    }
}
