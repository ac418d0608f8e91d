import Foundation
import FuzzTargets
import Testing

/// Every input a fuzzer found a crash or hang with (`Tests/FuzzRegressionTests/inputs/<target>/`), run again
/// through the same target body on every `make test`, with the seed corpus (`samples/`) beside them.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let samples = root.appendingPathComponent("../../samples").standardizedFileURL.path

    static func inputs(_ target: String) -> String { root.appendingPathComponent("inputs/\(target)").path }

    @Test func jsonReader() {
        #expect(FuzzTargets.replay([Self.inputs("json-reader"), Self.samples], FuzzTargets.jsonReader) > 50)
    }

    @Test func eventDecoder() {
        #expect(FuzzTargets.replay([Self.inputs("event-decoder"), Self.samples], FuzzTargets.eventDecoder) > 50)
    }

    @Test func luaBridge() {
        #expect(FuzzTargets.replay([Self.inputs("lua-bridge"), Self.samples], FuzzTargets.luaBridge) > 50)
    }
}
