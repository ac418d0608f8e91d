public import ArgumentParser
import Foundation

/// `switchboard stubs`: editor definitions for rule authors.
public struct StubsCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stubs",
        abstract: "Write LuaLS definitions so editors complete event fields and the rule API.",
        discussion: """
            Writes DIR/.luals/switchboard.lua (`---@meta`: a class per event with every field, its type and \
            what it means, from the same catalog as `switchboard events`; the rule table; log, http, json, \
            kazoo, env, forward, store, call; and the test API) and, when it does not exist yet, \
            DIR/.luarc.json pointing lua-language-server at it. VS Code (the "Lua" extension by sumneko) and \
            Neovim (lua_ls) pick both up when they open DIR. Files under .luals/ are never loaded as rules.

            Annotate a stage to get an event's fields: ---@param event ChannelCreateEvent. Class names are \
            the event's name in CamelCase plus Event: NotificationsLowBalanceEvent, ObjectDocEditedEvent.

            Run it again after upgrading Switchboard.

            Examples:
              switchboard stubs
              switchboard stubs --out my-rules
            """
    )

    @Option(name: .long, help: ArgumentHelp("The rules directory to write into.", valueName: "dir"))
    var out: String = "rules"

    public init() {}

    public func run() throws {
        let written = try Self.write(into: out)
        for path in written { print("wrote \(path)") }
    }

    /// Writes the definitions (always) and `.luarc.json` (when absent); returns the paths written.
    static func write(into directory: String) throws -> [String] {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("\(directory) is not a directory (give the rules directory with --out DIR)")
        }
        let stubs = (directory as NSString).appendingPathComponent(LuaStubs.directory)
        try manager.createDirectory(atPath: stubs, withIntermediateDirectories: true)
        let file = (stubs as NSString).appendingPathComponent(LuaStubs.fileName)
        try Data(LuaStubs.definitions().utf8).write(to: URL(fileURLWithPath: file))
        var written = [file]
        let luarc = (directory as NSString).appendingPathComponent(".luarc.json")
        if !manager.fileExists(atPath: luarc) {
            try Data(LuaStubs.luarc.utf8).write(to: URL(fileURLWithPath: luarc))
            written.append(luarc)
        }
        return written
    }
}
