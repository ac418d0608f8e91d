import Foundation

/// One Lua file read from the rules directory.
public struct SourceFile: Sendable, Hashable {
    /// Path relative to the rules directory (`crm_popup.lua`, `lib/phone.lua`): what messages show.
    public var path: String
    /// The path as given on the command line joined with `path` (`rules/crm_popup.lua`): the chunk name.
    public var displayPath: String
    public var text: String

    public init(path: String, displayPath: String, text: String) {
        self.path = path
        self.displayPath = displayPath
        self.text = text
    }
}

/// A snapshot of a rules directory: the rule files, in the order they run, and every Lua file `require` can
/// load. Immutable and Sendable, so every Lua worker loads the same set.
///
/// - Rule files: every `*.lua` below the directory except `*_test.lua` (tests), files under `lib/` or
///   `tests/` (modules and tests) and hidden ones (a name starting with a dot, such as `.luals/`). They run in
///   the order of their paths.
/// - Modules: every `*.lua` below the directory, by dotted name: `require "lib.phone"` is `lib/phone.lua`.
public struct RuleSource: Sendable, Hashable {
    public var directory: String
    public var rules: [SourceFile]
    public var modules: [String: SourceFile]
    /// Test files for `switchboard test`: every `*_test.lua`, and every `.lua` under `tests/`.
    public var tests: [SourceFile]

    public init(directory: String, rules: [SourceFile], modules: [String: SourceFile], tests: [SourceFile] = []) {
        self.directory = directory
        self.rules = rules.sorted { $0.path < $1.path }
        self.modules = modules
        self.tests = tests.sorted { $0.path < $1.path }
    }

    /// Builds a rule set from files given by their paths relative to `directory`, classified as `read` does.
    public init(directory: String, files: [String: String]) {
        var rules: [SourceFile] = []
        var modules: [String: SourceFile] = [:]
        var tests: [SourceFile] = []
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        for (relative, text) in files where relative.hasSuffix(".lua") {
            let file = SourceFile(path: relative, displayPath: prefix + relative, text: text)
            modules[Self.moduleName(relative)] = file
            if Self.isRuleFile(relative) { rules.append(file) }
            if Self.isTestFile(relative) { tests.append(file) }
        }
        self.init(directory: directory, rules: rules, modules: modules, tests: tests)
    }

    /// `lib/phone.lua` → `lib.phone`.
    static func moduleName(_ relative: String) -> String {
        String(relative.dropLast(4)).replacingOccurrences(of: "/", with: ".")
    }

    /// Reads a rules directory.
    /// - Throws: `RuleSourceError` when the directory cannot be read.
    public static func read(directory: String) throws -> RuleSource {
        // Follow a symlinked directory (a Kubernetes ConfigMap mount is one) to the files it points at.
        let root = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw RuleSourceError(
                message: "rules directory \(directory) does not exist (give another with --rules DIR)")
        }
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey])
        else {
            throw RuleSourceError(message: "cannot read the rules directory \(directory)")
        }
        var files: [String: String] = [:]
        for case let url as URL in walker where url.pathExtension == "lua" {
            let full = url.standardizedFileURL.path
            guard full.hasPrefix(root.path + "/") else { continue }
            let relative = String(full.dropFirst(root.path.count + 1))
            guard let data = FileManager.default.contents(atPath: full) else {
                throw RuleSourceError(message: "cannot read \(directory)/\(relative)")
            }
            files[relative] = String(decoding: data, as: UTF8.self)
        }
        return RuleSource(directory: directory, files: files)
    }

    /// Whether a relative path names a test file.
    public static func isTestFile(_ relative: String) -> Bool {
        relative.hasSuffix("_test.lua") || (relative.hasPrefix("tests/") && relative.hasSuffix(".lua"))
    }

    /// Whether a relative path names a rule file (not a test, module library or test helper).
    public static func isRuleFile(_ relative: String) -> Bool {
        let name = (relative as NSString).lastPathComponent
        if name.hasSuffix("_test.lua") { return false }
        // Hidden files and directories (editor backups, `.luals/` definitions) are never rules.
        if relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { return false }
        if relative.hasPrefix("lib/") || relative.hasPrefix("tests/") { return false }
        return relative.hasSuffix(".lua")
    }
}

/// The rules directory could not be read.
public struct RuleSourceError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
