public import ArgumentParser
import Foundation
import JSONCore
import NIOHTTP1
import RuleEngine

/// `switchboard kazoo sync|status`: the Kazoo side of the rules.
public struct KazooCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "kazoo",
        abstract: "Create, update and check the Kazoo webhooks the rules need.",
        discussion: """
            sync works out which Kazoo hooks the rules' `on` names need (notifications and object hooks with \
            the custom_data.type / action Kazoo requires), prints the plan, then creates or updates them \
            through crossbar, pointing at --public-url with --token, JSON format, and deletes the hooks it \
            created earlier that no rule needs any more. It only touches hooks it created: their names start \
            with "switchboard:". status lists the account's hooks, enabled or not (and why), with Kazoo's \
            recent failed attempts for each.

            Credentials: --api-key (or SWITCHBOARD_KAZOO_API_KEY), or --user with --password (or \
            SWITCHBOARD_KAZOO_PASSWORD) and --account-name. Prefer the variables: a command line is visible \
            to every user of the machine.

            Examples:
              switchboard kazoo sync --api https://kazoo.example.com:8443 --account 3f1c… \\
                --public-url https://switchboard.example.com --token s3cret --dry-run
              switchboard kazoo status --api https://kazoo.example.com:8443 --account 3f1c…
            """,
        subcommands: [Sync.self, Status.self]
    )

    public init() {}

    /// Where Kazoo's API is and how to log in.
    struct Connection: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Kazoo's API base URL (env SWITCHBOARD_KAZOO_API).", valueName: "url"))
        var api: String?
        @Option(name: .long, help: ArgumentHelp("The account id.", valueName: "id"))
        var account: String
        @Option(
            name: .customLong("api-key"),
            help: ArgumentHelp("An API key (env SWITCHBOARD_KAZOO_API_KEY).", valueName: "key"))
        var apiKey: String?
        @Option(name: .long, help: ArgumentHelp("A user name (with --password and --account-name).", valueName: "name"))
        var user: String?
        @Option(
            name: .long,
            help: ArgumentHelp("The user's password (env SWITCHBOARD_KAZOO_PASSWORD).", valueName: "password"))
        var password: String?
        @Option(
            name: .customLong("account-name"),
            help: ArgumentHelp("The account name the user logs in to.", valueName: "name"))
        var accountName: String?

        func crossbar(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Crossbar {
            guard let api = api ?? environment["SWITCHBOARD_KAZOO_API"], api.hasPrefix("http") else {
                throw ValidationError(
                    "give Kazoo's API URL with --api https://kazoo.example.com:8443 (or SWITCHBOARD_KAZOO_API)")
            }
            guard
                let crossbar = Crossbar.make(
                    api: api, account: account, apiKey: apiKey ?? environment["SWITCHBOARD_KAZOO_API_KEY"], user: user,
                    password: password ?? environment["SWITCHBOARD_KAZOO_PASSWORD"], accountName: accountName)
            else {
                throw ValidationError(
                    "give --api-key (or SWITCHBOARD_KAZOO_API_KEY), or --user, --password (or SWITCHBOARD_KAZOO_PASSWORD) and --account-name"
                )
            }
            return crossbar
        }
    }

    struct Sync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, update and delete Switchboard's Kazoo hooks to match the rules.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: ArgumentHelp("The rules directory.", valueName: "dir"))
        var rules: String = "rules"
        @Option(
            name: .customLong("public-url"), help: ArgumentHelp("Where Kazoo reaches this server.", valueName: "url"))
        var publicURL: String
        @Option(
            name: .long,
            help: ArgumentHelp(
                "The server's --token, put in each hook's URL (env SWITCHBOARD_TOKEN).", valueName: "secret"))
        var token: String?
        @Flag(name: .customLong("include-subaccounts"), help: "Hooks fire for sub-accounts' events too.")
        var includeSubaccounts = false
        @Flag(name: .customLong("dry-run"), help: "Print the plan; change nothing.")
        var dryRun = false

        func validate() throws {
            guard publicURL.hasPrefix("http://") || publicURL.hasPrefix("https://") else {
                throw ValidationError("--public-url must be the http(s) URL Kazoo reaches this server at")
            }
        }

        func run() async throws {
            let source: RuleSource
            do { source = try RuleSource.read(directory: rules) } catch { throw ValidationError("\(error)") }
            let worker = try RuleWorker(source: source, configuration: RuleConfiguration())
            let problems = await worker.diagnostics.filter { $0.severity == .error }
            guard problems.isEmpty else {
                throw CommandFailure("fix the rules first:\n" + problems.map(\.description).joined(separator: "\n"))
            }
            let desired = KazooHooks.needed(
                by: await worker.rules, publicURL: publicURL,
                token: token ?? ProcessInfo.processInfo.environment["SWITCHBOARD_TOKEN"],
                includeSubaccounts: includeSubaccounts)
            let plan = try await connection.crossbar().using {
                try await KazooHooks.sync(desired, crossbar: $0, apply: !dryRun) { print($0) }
            }
            print(
                dryRun
                    ? "dry run: nothing changed (\(plan.changes) change(s) planned)" : "done: \(plan.changes) change(s)"
            )
            if desired.callflowNote { print(KazooHooks.callflowNote(publicURL)) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Each hook of the account: enabled or not, and Kazoo's recent failed attempts.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let lines = try await connection.crossbar().using { try await KazooHooks.status(crossbar: $0) }
            for line in lines { print(line) }
        }
    }
}

/// The hooks rules need, and how to bring Kazoo in line with them.
enum KazooHooks {
    /// The name prefix that marks the hooks Switchboard created (and may change or delete).
    static let marker = "switchboard: "

    struct Hook: Equatable {
        var hook: String
        var type: String? = nil
        var action: String? = nil
        var uri: String = ""
        var includeSubaccounts = false

        var name: String {
            var name = KazooHooks.marker + hook
            if let type { name += " type=\(type)" }
            if let action { name += " action=\(action)" }
            return name
        }

        var document: JSONValue {
            var doc: JSONObject = JSONObject()
            doc["name"] = .string(name)
            doc["uri"] = .string(uri)
            doc["hook"] = .string(hook)
            doc["http_verb"] = "post"
            doc["format"] = "json"
            doc["enabled"] = true
            doc["include_subaccounts"] = .bool(includeSubaccounts)
            var custom = JSONObject()
            if let type { custom["type"] = .string(type) }
            if let action { custom["action"] = .string(action) }
            if !custom.isEmpty { doc["custom_data"] = .object(custom) }
            return .object(doc)
        }
    }

    struct Desired {
        var hooks: [Hook]
        /// A rule handles the callflow webhook action, which is set in a callflow, not as a hook.
        var callflowNote: Bool
    }

    /// From the rules' `on` names: one hook per channel event, `notifications` per type (or `all`), `object`
    /// per action with type `all`, one `parking`, `sms`, `mms`; `*` anywhere: a single `all` hook.
    static func needed(by rules: [RuleDefinition], publicURL: String, token: String?, includeSubaccounts: Bool)
        -> Desired
    {
        let names = Set(rules.flatMap { $0.on.map(\.text) })
        var hooks: [Hook] = []
        if names.contains("*") {
            hooks = [Hook(hook: "all")]
        } else {
            let channel = ["channel_create", "channel_answer", "channel_bridge", "channel_destroy"]
            for hook in channel where names.contains(hook) || names.contains("channel.*") {
                hooks.append(Hook(hook: hook))
            }
            if names.contains("notifications.*") {
                hooks.append(Hook(hook: "notifications", type: "all"))
            } else {
                for name in names.sorted() where name.hasPrefix("notifications.") {
                    hooks.append(Hook(hook: "notifications", type: String(name.dropFirst("notifications.".count))))
                }
            }
            if names.contains("object.*") {
                hooks.append(Hook(hook: "object", type: "all", action: "all"))
            } else {
                for name in names.sorted() where name.hasPrefix("object.") {
                    hooks.append(Hook(hook: "object", type: "all", action: String(name.dropFirst("object.".count))))
                }
            }
            if names.contains(where: { $0.hasPrefix("parking.") }) { hooks.append(Hook(hook: "parking")) }
            for hook in ["sms", "mms"] where names.contains(hook) { hooks.append(Hook(hook: hook)) }
        }
        let base = publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL
        for index in hooks.indices {
            let segment = token.map {
                "/" + ($0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? $0)
            }
            hooks[index].uri = base + "/hooks/" + hooks[index].hook + (segment ?? "")
            hooks[index].includeSubaccounts = includeSubaccounts
        }
        return Desired(hooks: hooks, callflowNote: names.contains("webhook") || names.contains("*"))
    }

    static func callflowNote(_ publicURL: String) -> String {
        "note: the callflow webhook action is set in each callflow (module \"webhook\"), not as a hook: point its uri at \(publicURL)/hooks/webhook"
    }

    struct Plan {
        var changes = 0
    }

    /// Prints the plan through `say`, then (with `apply`) carries it out.
    static func sync(_ desired: Desired, crossbar: Crossbar, apply: Bool, say: (String) -> Void) async throws -> Plan {
        let path = "/v2/accounts/\(crossbar.account)/webhooks"
        let existing = try await crossbar.list(path).filter { $0["name"]?.stringValue?.hasPrefix(marker) == true }
        var byName: [String: JSONValue] = [:]
        var steps: [(String, () async throws -> Void)] = []
        for hook in existing {
            guard let name = hook["name"]?.stringValue, let id = hook["id"]?.stringValue else { continue }
            if byName[name] == nil {
                byName[name] = hook
            } else {
                // Two of ours with one name (an interrupted sync): Kazoo would send those events twice.
                steps.append(
                    ("delete  \(name) (\(id)): a duplicate", { try await crossbar.request(.DELETE, "\(path)/\(id)") }))
            }
        }
        for hook in desired.hooks {
            if let current = byName.removeValue(forKey: hook.name), let id = current["id"]?.stringValue {
                let enabled = current["enabled"]?.boolValue ?? true
                let reason = current["disable_reason"]?.stringValue
                if !enabled, reason == nil {
                    say("keep    \(hook.name): disabled by hand, left off")
                    continue
                }
                // The list leaves out format and include_subaccounts: read the hook itself.
                let document = try await crossbar.request(.GET, "\(path)/\(id)")["data"] ?? .null
                var why: [String] = []
                if !enabled { why.append("Kazoo disabled it (\(reason ?? "?"))") }
                if current["uri"]?.stringValue != hook.uri { why.append("its URL changes") }
                if document["format"]?.stringValue != "json" { why.append("its format becomes json") }
                if (document["include_subaccounts"]?.boolValue ?? false) != hook.includeSubaccounts {
                    why.append("include_subaccounts becomes \(hook.includeSubaccounts)")
                }
                if why.isEmpty {
                    say("keep    \(hook.name)")
                    continue
                }
                steps.append(
                    (
                        "update  \(hook.name): \(why.joined(separator: ", "))",
                        { try await crossbar.request(.PATCH, "\(path)/\(id)", data: hook.document) }
                    ))
            } else {
                steps.append(
                    (
                        "create  \(hook.name) -> \(redacted(hook.uri))",
                        { try await crossbar.request(.PUT, path, data: hook.document) }
                    ))
            }
        }
        for (name, hook) in byName.sorted(by: { $0.key < $1.key }) {
            guard let id = hook["id"]?.stringValue else { continue }
            steps.append(
                ("delete  \(name): no rule needs it", { try await crossbar.request(.DELETE, "\(path)/\(id)") }))
        }
        for (line, _) in steps { say(line) }
        if apply { for (_, step) in steps { try await step() } }
        return Plan(changes: steps.count)
    }

    /// A hook URL with its token (the last path segment after /hooks/NAME/) hidden.
    static func redacted(_ uri: String) -> String {
        guard let range = uri.range(of: "/hooks/") else { return uri }
        let rest = uri[range.upperBound...].split(separator: "/", maxSplits: 1)
        return rest.count == 2 ? String(uri[..<range.upperBound]) + rest[0] + "/…" : uri
    }

    /// One line per hook: ours or not, enabled or why not, and its failed attempts.
    static func status(crossbar: Crossbar) async throws -> [String] {
        let path = "/v2/accounts/\(crossbar.account)/webhooks"
        let hooks = try await crossbar.list(path)
        if hooks.isEmpty { return ["no webhooks in account \(crossbar.account) (switchboard kazoo sync creates them)"] }
        var lines: [String] = []
        for hook in hooks.sorted(by: { ($0["name"]?.stringValue ?? "") < ($1["name"]?.stringValue ?? "") }) {
            let name = hook["name"]?.stringValue ?? "?"
            let enabled = hook["enabled"]?.boolValue ?? true
            var line = (enabled ? "enabled   " : "DISABLED  ") + name
            if !enabled { line += " (" + (hook["disable_reason"]?.stringValue ?? "disabled by hand") + ")" }
            line += "  " + redacted(hook["uri"]?.stringValue ?? "")
            lines.append(line)
            guard let id = hook["id"]?.stringValue else { continue }
            let attempts = try await crossbar.list("\(path)/\(id)/attempts")
            let failures = attempts.filter { $0["result"]?.stringValue == "failure" }
            if let last = failures.first {
                let code =
                    last["resp_status_code"].map(HostValueText.text) ?? last["client_error"].map(HostValueText.text)
                    ?? ""
                let latest = [last["reason"]?.stringValue ?? "?", code].filter { !$0.isEmpty }.joined(separator: " ")
                lines.append("          \(failures.count) failed attempt(s) in Kazoo's log; the latest: \(latest)")
            }
        }
        return lines
    }
}
