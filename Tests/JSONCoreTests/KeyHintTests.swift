import Testing

@testable import JSONCore

@Suite struct KeyHintTests {
    func object(_ keys: [String]) -> JSONObject {
        JSONObject(uniqueMembersUnchecked: keys.enumerated().map { .init(key: $1, value: .int(Int64($0))) })
    }

    @Test func findsTheKeyWhereverItIsAndWhateverTheHintGuessed() {
        let hint = KeyHint("timestamp")
        let first = object(["a", "b", "timestamp", "c"])
        #expect(first[hint] == .int(2))
        // The same shape again: the remembered position.
        #expect(first[hint] == .int(2))
        // Another shape: the guess (position 2) holds another key, so the object is searched.
        #expect(object(["timestamp", "x", "y"])[hint] == .int(0))
        // A guess past the end of a shorter object, and an object without the key.
        #expect(object(["q", "r", "s", "t", "timestamp"])[hint] == .int(4))
        #expect(object(["a", "b"])[hint] == nil)
        #expect(JSONObject()[hint] == nil)
        // A key of the same length is not taken for it.
        #expect(object(["timestamq", "timestamp"])[hint] == .int(1))
    }

    @Test func agreesWithTheStringSubscriptOnObjectsThatChange() {
        let hint = KeyHint("call_id")
        var fields = object(["account_id", "call_id", "to"])
        #expect(fields[hint] == fields["call_id"])
        fields["call_id"] = nil
        #expect(fields[hint] == nil)
        fields["call_id"] = "abc"
        #expect(fields[hint] == "abc")
        #expect(fields[hint] == fields["call_id"])
    }
}
