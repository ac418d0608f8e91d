import Foundation
import JSONCore
import Logging
import NIOHTTP1
import RuleEngine
import Synchronization
import Testing
import WebhookServer

/// A rules directory on disk that tests edit the way editors and deploy tools do.
struct RulesDirectory {
    let path: String

    init() throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-reload-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    static func rule(_ name: String) -> String {
        "return { name = \"\(name)\", on = \"*\", run = function(event) log.info(\"\(name) \" .. tostring(event.call_id)) end }\n"
    }

    /// Writes a temporary file beside the target and renames it into place, as editors do.
    func renameSave(_ file: String, _ text: String) throws {
        let temporary = path + "/.\(file).swp"
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path + "/" + file) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    func write(_ file: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path + "/" + file))
    }
}

@Suite struct ReloadTests {
    @Test func renameSaveAddAndDeleteAreReloaded() async throws {
        let dir = try RulesDirectory()
        try dir.write("a.lua", RulesDirectory.rule("a1"))
        try await withServer(directory: dir.path) { server in
            #expect(server.dispatcher.ruleNames == ["a1"])
            try dir.renameSave("a.lua", RulesDirectory.rule("a2"))
            #expect(await server.eventually { server.dispatcher.ruleNames == ["a2"] })
            try dir.write("b.lua", RulesDirectory.rule("b1"))
            #expect(await server.eventually { server.dispatcher.ruleNames == ["a2", "b1"] })
            try FileManager.default.removeItem(atPath: dir.path + "/a.lua")
            #expect(await server.eventually { server.dispatcher.ruleNames == ["b1"] })
            #expect(server.metrics.value("switchboard_reloads_total", [("result", "ok")]) >= 3)
            let ready = try await server.send(.GET, "/readyz").body
            #expect(ready.contains(#""rules":["b1"]"#))
        }
    }

    @Test func aBrokenFileKeepsTheWholeRunningSet() async throws {
        let dir = try RulesDirectory()
        try dir.write("a.lua", RulesDirectory.rule("a1"))
        try dir.write("b.lua", RulesDirectory.rule("b1"))
        try await withServer(directory: dir.path) { server in
            try dir.write("a.lua", RulesDirectory.rule("a2"))
            try dir.write("b.lua", "return { name = \"b2\", on = \"*\", run = function() end\n")
            #expect(await server.eventually { server.dispatcher.lastReloadResult?.ok == false })
            #expect(server.dispatcher.ruleNames == ["a1", "b1"])  // not a2: all or nothing
            let ready = try await server.send(.GET, "/readyz").body
            #expect(ready.contains("b.lua:2: error"))
            #expect(server.logs.contains(.warning, "reload rejected, running rules kept"))
            try dir.write("b.lua", RulesDirectory.rule("b2"))
            #expect(await server.eventually { server.dispatcher.ruleNames == ["a2", "b2"] })
        }
    }

    @Test func aTruncatedFileNeverLoadsAsEmpty() async throws {
        let dir = try RulesDirectory()
        try dir.write("a.lua", RulesDirectory.rule("a1"))
        try await withServer(directory: dir.path) { server in
            let seen = Mutex<Set<[String]>>([])
            let watching = Task {
                while !Task.isCancelled {
                    let names = server.dispatcher.ruleNames
                    seen.withLock { _ = $0.insert(names) }
                    try? await Task.sleep(for: .milliseconds(1))
                }
            }
            for version in 2...6 {
                // Truncate, pause mid-write, then finish: as a slow `cat > file` does.
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/a.lua"))
                try handle.truncate(atOffset: 0)
                let text = Array(RulesDirectory.rule("a\(version)").utf8)
                try handle.write(contentsOf: text[..<20])
                try await Task.sleep(for: .milliseconds(60))
                try handle.write(contentsOf: text[20...])
                try handle.close()
                #expect(await server.eventually { server.dispatcher.ruleNames == ["a\(version)"] })
            }
            watching.cancel()
            #expect(
                seen.withLock { $0 }.allSatisfy { $0.count == 1 },
                "a set without the rule was running: \(seen.withLock { $0 })")
        }
    }

    @Test func aSwappedSymlinkDirectoryIsFollowed() async throws {
        let base = try RulesDirectory()
        let v1 = base.path + "/v1", v2 = base.path + "/v2", link = base.path + "/rules"
        try FileManager.default.createDirectory(atPath: v1, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: v2, withIntermediateDirectories: true)
        try Data(RulesDirectory.rule("one").utf8).write(to: URL(fileURLWithPath: v1 + "/r.lua"))
        try Data(RulesDirectory.rule("two").utf8).write(to: URL(fileURLWithPath: v2 + "/r.lua"))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: v1)
        try await withServer(directory: link) { server in
            #expect(server.dispatcher.ruleNames == ["one"])
            // Atomic swap: a new symlink renamed over the old one, as Kubernetes does with ConfigMaps.
            try FileManager.default.createSymbolicLink(atPath: link + ".new", withDestinationPath: v2)
            #expect(rename(link + ".new", link) == 0)
            #expect(await server.eventually { server.dispatcher.ruleNames == ["two"] })
        }
    }

    @Test func aHundredReloadsWhileRequestsStreamNeverMixSetsOrFailAnAnswer() async throws {
        let dir = try RulesDirectory()
        func write(_ version: Int) throws {
            for file in ["a", "b"] {
                try dir.renameSave(
                    "\(file).lua",
                    """
                    return { name = "\(file)", on = "*", run = function(event) log.info("\(file) v\(version) " .. event.call_id) end }
                    """)
            }
        }
        try write(0)
        // Reloads come only from here, each after both files are written; so a and b differing for one event
        // could only mean the event met two rule sets.
        try await withServer(directory: dir.path, watch: false) { server in
            let statuses = Mutex<[Int]>([])
            let stop = Atomic<Bool>(false)
            let body = try sampleBody("channel_create__inbound.json")
            let json = try JSONReader.parse(body).objectValue!
            let stream = Task {
                var i = 0
                while !stop.load(ordering: .relaxed) {
                    var event = json
                    event["call_id"] = .string("call-\(i)")
                    let status =
                        (try? await server.send(.POST, "/hooks/all", body: try JSONWriter.encode(.object(event))).status)
                        ?? -1
                    statuses.withLock { $0.append(status) }
                    i += 1
                }
            }
            #expect(await server.eventually { statuses.withLock { $0.count } >= 5 })
            for version in 1...100 {
                try write(version)
                let result = await server.dispatcher.reload(directory: dir.path, reason: "test")
                #expect(result.ok)
                let answered = statuses.withLock { $0.count }
                // At least one answer lands between two reloads, however slow the machine is.
                #expect(await server.eventually { statuses.withLock { $0.count } > answered })
            }
            stop.store(true, ordering: .relaxed)
            _ = await stream.value
            let sent = statuses.withLock { $0 }
            #expect(sent.count > 100, "the client sent too few requests to mean anything: \(sent.count)")
            #expect(sent.allSatisfy { $0 == 200 }, "non-200 answers: \(sent.filter { $0 != 200 })")
            #expect(await server.eventually { server.dispatcher.eventsInFlight == 0 })
            // Every event saw a and b from the same version.
            var versions: [String: [String: String]] = [:]
            for (_, line) in server.logs.lines.withLock({ $0 }) {
                let parts = line.split(separator: " ")
                guard parts.count >= 3, parts[0] == "a" || parts[0] == "b", parts[2].hasPrefix("call-") else {
                    continue
                }
                versions[String(parts[2]), default: [:]][String(parts[0])] = String(parts[1])
            }
            #expect(versions.count == sent.count)
            let mixed = versions.filter { $0.value["a"] != $0.value["b"] }
            #expect(mixed.isEmpty, "events processed by a mixed set: \(mixed.prefix(3))")
            #expect(server.dispatcher.generation.version >= 100)
        }
    }
}
