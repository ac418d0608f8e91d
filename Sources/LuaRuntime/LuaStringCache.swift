import CLua
import CLuaShim

/// Lua strings a state made once and hands out again: the keys of decoded events (JSONCore's `KeyInterner`
/// gives every event the same String for each Kazoo field name) and short values such as `"inbound"`.
///
/// Lua interns every string of up to 40 bytes, hashing each byte and searching its string table: about 250
/// instructions for a 30-byte key, 30 keys per event. A hit here compares two words and reads the registry.
///
/// A slot is found by the String's two words, not by its text. Equal words mean equal text while the slot
/// holds its String: a short string's words are its bytes, a longer one's are its length and the address of
/// its storage, which cannot be freed or changed in place while the slot shares it. Only strings Lua would
/// intern are kept (at most 40 bytes), so the cache holds at most 256 × 40 bytes of text on each side.
///
/// The state owns the cache; stacks use it through `Table`, a plain pointer that never outlives the state and
/// needs no retain, release or exclusivity check on the path taken for every key.
final class LuaStringCache {
    static let slotCount = 256
    /// Lua's longest interned string (`LUAI_MAXSHORTLEN`); longer ones are copied whole by Lua anyway.
    static let maxBytes = 40
    /// Swift keeps strings of up to 15 bytes inside the String itself: the same text has the same words.
    static let inlineBytes = 15

    struct Slot {
        var words: (UInt64, UInt64) = (0, 0)
        /// Keeps the storage behind `words` alive; "" in an empty slot.
        var string = ""
        /// The registry slot holding the Lua string, 0 while empty (`luaL_ref` never returns 0).
        var ref: Int32 = 0
    }

    let table: Table

    init() {
        precondition(MemoryLayout<String>.size == MemoryLayout<(UInt64, UInt64)>.size, "String is not two words")
        let slots = UnsafeMutablePointer<Slot>.allocate(capacity: Self.slotCount)
        slots.initialize(repeating: Slot(), count: Self.slotCount)
        table = Table(slots: slots)
    }

    deinit {
        table.slots.deinitialize(count: Self.slotCount)
        table.slots.deallocate()
    }

    struct Table {
        fileprivate let slots: UnsafeMutablePointer<Slot>

        /// Pushes `s` on `L` (any thread of the state that owns the cache) from the cache, or makes it and keeps
        /// it when `keep` (a table key) or when it is short enough for its words to be its text. Returns false,
        /// having pushed nothing, for a string the cache does not handle. Stack effect: +1 when it returns true.
        func push(_ s: String, on L: OpaquePointer, keep: Bool) -> Bool {
            let count = s.utf8.count
            guard count <= LuaStringCache.maxBytes, keep || count <= LuaStringCache.inlineBytes else { return false }
            let words = unsafeBitCast(s, to: (UInt64, UInt64).self)
            let mixed = (words.0 ^ (words.1 &>> 3) ^ (words.1 &<< 29)) &* 0x9E37_79B9_7F4A_7C15
            let slot = slots + Int(truncatingIfNeeded: mixed &>> 56)
            if slot.pointee.ref != 0, slot.pointee.words == words {
                sb_getref(L, slot.pointee.ref)
                return true
            }
            LuaStack(L: L).pushString(s)
            lua_pushvalue(L, -1)
            if slot.pointee.ref == 0 {
                slot.pointee.ref = sb_ref(L)
            } else {
                sb_setref(L, slot.pointee.ref)
            }
            slot.pointee.words = words
            slot.pointee.string = s
            return true
        }
    }
}
