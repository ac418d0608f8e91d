import Foundation
public import KazooEvents

/// LuaLS definition files (`---@meta`) for rule authors: a class per event from the event catalog (the
/// source `switchboard events` prints, so they cannot drift apart), the rule table, the rule API and the test
/// API, and the `.luarc.json` that points VS Code and Neovim at them.
public enum LuaStubs {
    /// Where the definitions go inside the rules directory. Paths starting with a dot are never rules.
    public static let directory = ".luals"
    public static let fileName = "switchboard.lua"

    /// The `.luarc.json` for the rules directory.
    public static let luarc = """
        {
          "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
          "runtime.version": "Lua 5.4",
          "workspace.library": ["\(directory)"],
          "workspace.checkThirdParty": false,
          "diagnostics.globals": ["test", "run", "tick", "sample", "decode", "expect", "clock"]
        }

        """

    /// The class name of an event: `channel_create` → `ChannelCreateEvent`, `notifications.low_balance` →
    /// `NotificationsLowBalanceEvent`.
    public static func className(_ spec: EventSpec) -> String {
        className(for: spec.qualifiedName)
    }

    static func className(for name: String) -> String {
        let parts = name.split(whereSeparator: { $0 == "." || $0 == "_" || $0 == "-" })
        return parts.map { $0.prefix(1).uppercased() + $0.dropFirst().lowercased() }.joined() + "Event"
    }

    /// The whole definition file.
    public static func definitions() -> String {
        var out: [String] = [
            "---@meta",
            "-- Switchboard's rule API for lua-language-server. Written by `switchboard stubs` from the event",
            "-- catalog (`switchboard events`) and the rule API: do not edit, run it again after an upgrade.",
            "",
        ]
        out.append(contentsOf: eventClasses())
        let log = ["debug", "info", "warn", "error"].map {
            "---@param message any\n---@param fields? table\nfunction log.\($0)(message, fields) end"
        }
        out.append(api.replacingOccurrences(of: "LOG_FUNCTIONS", with: log.joined(separator: "\n")))
        return out.joined(separator: "\n") + "\n"
    }

    static func eventClasses() -> [String] {
        var out = [
            "---The event as rules see it: the fields Kazoo sent (any may be missing), typed, plus these.",
            "---@class Event",
            "---@field kind \"channel\"|\"notification\"|\"object\"|\"parking\"|\"sms\"|\"mms\"|\"webhook\"|\"unknown\"",
            "---@field name string channel_create, low_balance, doc_edited, PARK_PARKED…",
            "---@field unix_time integer? when it happened (Unix seconds), when the event has a timestamp",
            "---@field id string? the payload's own id, else the accepted event's id (meta.id)",
            "---@field meta EventMeta? request data (server only)",
            "---@field [string] any",
            "",
            "---@class EventMeta",
            "---@field id string the accepted event's id, the same on every run of it",
            "---@field hook_id string? Kazoo's X-Hook-ID",
            "---@field account_id string? Kazoo's X-Account-ID",
            "---@field received_at number Unix seconds",
            "---@field peer string the sender's address",
            "---@field hook string the URL's hook",
            "---@field method string",
            "---@field format \"json\"|\"form\"|\"query\"",
            "",
        ]
        var nested: [String] = []
        for spec in EventCatalog.all {
            let name = className(spec)
            out.append("---\(spec.qualifiedName): \(spec.summary) (Kazoo hook: \(spec.hook))")
            out.append("---@class \(name): Event")
            for field in spec.fields {
                out.append(fieldLine(field, owner: name, nested: &nested))
            }
            out.append("")
        }
        return out + nested
    }

    static func fieldLine(_ field: FieldSpec, owner: String, nested: inout [String]) -> String {
        let type = luaType(field.type, owner: owner, field: field.name, nested: &nested)
        let key =
            field.name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) ? field.name : "[\"\(field.name)\"]"
        let doc = field.summary.isEmpty ? "" : " \(field.summary)"
        return "---@field \(key) \(type)?\(doc)".trimmingCharacters(in: .whitespaces)
    }

    /// A LuaLS type for a field; objects with known members get a class of their own (appended to `nested`).
    static func luaType(_ type: FieldType, owner: String, field: String, nested: inout [String]) -> String {
        switch type {
        case .string: return "string"
        case .integer, .gregorianSeconds: return "integer"
        case .number: return "number"
        case .boolean: return "boolean"
        case .stringOrList: return "string|table"
        case .array(let element):
            let inner = luaType(element, owner: owner, field: field, nested: &nested)
            return inner.contains("|") ? "(\(inner))[]" : "\(inner)[]"
        case .object(let members):
            if members.isEmpty { return "table<string, any>" }
            let name = String(owner.dropLast("Event".count)) + className(for: field).dropLast("Event".count)
            var lines = ["---@class \(name)"]
            for member in members { lines.append(fieldLine(member, owner: name + "Event", nested: &nested)) }
            lines.append("---@field [string] any")
            lines.append("")
            nested.append(contentsOf: lines)
            return name
        }
    }

    /// The rule table, the rule API and the test API.
    static let api = #"""
        ---Where a forward goes: a URL, or a table.
        ---@class ForwardTarget
        ---@field url string http:// or https://
        ---@field method? "POST"|"PUT"|"PATCH"|"GET"|"DELETE" default POST
        ---@field format? "json"|"form" form encodes the way Kazoo does (a[b]=v, k[]=v); default json
        ---@field headers? table<string, string>
        ---@field sign? string the variable holding a secret: sign each attempt the Standard Webhooks way

        ---What a rule file returns.
        ---@class Rule
        ---@field name? string unique; defaults to the file's path without .lua
        ---@field description? string
        ---@field on? string|string[] event names: "channel_create", "notifications.low_balance", "notifications.*", "*"
        ---@field match? table<string, any> field = value or { a, b }; dotted keys reach nested fields
        ---@field filter? fun(event: Event): any falsy skips the event
        ---@field transform? fun(event: Event): table? the payload; nil drops the event
        ---@field forward? string|ForwardTarget|(string|ForwardTarget)[]
        ---@field run? fun(event: Event, payload: table?)
        ---@field every? integer|string run tick every so many seconds: 60, "30s", "5m", "1h"
        ---@field cron? string five-field cron: "0 9 * * 1-5"
        ---@field timezone? string the zone cron times are in: "Europe/Berlin" (default UTC)
        ---@field tick? fun(now: integer) runs on the schedule; now in Unix seconds

        ---Structured log lines, shown with the rule's name.
        log = {}
        LOG_FUNCTIONS

        ---@class HttpResponse
        ---@field status integer
        ---@field headers table<string, string> lower-case names
        ---@field body string
        ---@field json any the decoded body, when it is JSON

        ---@class HttpOptions
        ---@field headers? table<string, string>
        ---@field timeout? number seconds: default 5, at most 30

        ---@class HttpRequest: HttpOptions
        ---@field url string
        ---@field method? string default GET, or POST with a body
        ---@field body? string
        ---@field json? table sent as JSON

        ---HTTP from filter, transform, run and tick: only the rule's coroutine waits.
        http = {}
        ---@param request HttpRequest
        ---@return HttpResponse? response
        ---@return string? error nil response: why (refused, timed out, dry run)
        function http.request(request) end
        ---@param url string
        ---@param options? HttpOptions
        ---@return HttpResponse? response
        ---@return string? error
        function http.get(url, options) end
        ---@param url string
        ---@param body string|table a table is sent as JSON
        ---@param options? HttpOptions
        ---@return HttpResponse? response
        ---@return string? error
        function http.post(url, body, options) end
        ---(test files) Answers the rules' HTTP calls matching method and url ("*" matches any run of characters).
        ---@param mock { method?: string, url: string, status?: integer, headers?: table<string, string>, body?: string, json?: any, error?: string, timeout?: boolean }
        function http.mock(mock) end

        json = {}
        ---@param value any
        ---@return string
        function json.encode(value) end
        ---@param text string
        ---@return any value
        ---@return string? error
        function json.decode(text) end
        ---@type lightuserdata JSON's null
        json.null = nil
        ---Marks a table (or a new one) to encode as [].
        ---@param t? table
        ---@return table
        function json.array(t) end
        ---Marks a table (or a new one) to encode as {}.
        ---@param t? table
        ---@return table
        function json.object(t) end

        kazoo = {}
        ---A number as E.164 ("(415) 555-0123" → "+14155550123"), or nil.
        ---@param number string
        ---@param country? string default "1"
        ---@return string?
        function kazoo.e164(number, country) end
        ---@param uri string "sip:+14155550123@pbx.example.net"
        ---@return string
        function kazoo.user(uri) end
        ---@param uri string
        ---@return string?
        function kazoo.realm(uri) end
        ---Kazoo's Gregorian seconds as Unix seconds.
        ---@param gregorian integer
        ---@return integer
        function kazoo.unix(gregorian) end
        ---Unix seconds as Kazoo's Gregorian seconds.
        ---@param unix integer
        ---@return integer
        function kazoo.gregorian(unix) end
        ---A custom channel variable, whatever its spelling ("Resource-Type", "resource_type").
        ---@param event Event
        ---@param name string
        ---@return any
        function kazoo.ccv(event, name) end

        ---A configuration variable: SWITCHBOARD_* or one allowed with --allow-env; nil when not set.
        ---@param name string
        ---@return string?
        function env(name) end

        ---Sends a payload to a target after the rule finishes (through the outbox).
        ---@param target string|ForwardTarget|(string|ForwardTarget)[]
        ---@param payload any
        function forward(target, payload) end

        ---@class StoreOptions
        ---@field ttl? number|string seconds, or "10m"

        ---@class StoreFunctions
        local StoreFunctions = {}
        ---@param key string
        ---@return any
        function StoreFunctions.get(key) end
        ---@param key string
        ---@param value any nil deletes
        ---@param options? StoreOptions
        function StoreFunctions.set(key, value, options) end
        ---@param key string
        ---@param by? number default 1
        ---@param options? StoreOptions
        ---@return number
        function StoreFunctions.incr(key, by, options) end
        ---@param key string
        function StoreFunctions.delete(key) end
        ---Sets the key only if absent; true if it did.
        ---@param key string
        ---@param value any
        ---@param options? StoreOptions
        ---@return boolean
        function StoreFunctions.add(key, value, options) end
        ---Records one occurrence now; returns how many fell in the window.
        ---@param key string
        ---@param window number|string seconds, or "10m"
        ---@return integer
        function StoreFunctions.count(key, window) end

        ---@class TestStoreView
        ---@field get fun(key: string): any
        ---@field set fun(key: string, value: any)
        ---@field keys fun(): string[]

        ---State that outlives a run, the same on every worker; the rule's own keys. store.shared: every rule's.
        ---@class Store: StoreFunctions
        ---@field shared StoreFunctions
        ---@field rule fun(name: string): TestStoreView (test files) the keys a rule wrote
        ---@field call fun(call_id: string): TestStoreView (test files) a call's call.* state

        ---@type Store
        store = {}

        ---State of the event's call (its call_id), kept until an hour after its channel_destroy.
        call = {}
        ---@param key string
        ---@return any
        function call.get(key) end
        ---@param key string
        ---@param value any nil deletes
        function call.set(key, value) end

        -- The test API (in *_test.lua files only).

        ---@class RunResult
        ---@field outcome "ok"|"skipped"|"dropped"|"error"
        ---@field stage string?
        ---@field skipped boolean
        ---@field dropped boolean
        ---@field forwards { method: string, url: string, headers: table<string, string>, body: any, format: string }[]
        ---@field http { method: string, url: string, status: integer?, error: string? }[]
        ---@field logs { level: string, message: string, fields: table? }[]
        ---@field error { message: string, file: string?, line: integer?, traceback: string? }?

        ---@param name string
        ---@param fn fun()
        function test(name, fn) end
        ---Runs one rule on an event; returns what it did.
        ---@param rule string
        ---@param event Event|table
        ---@param hook? string
        ---@return RunResult
        function run(rule, event, hook) end
        ---Runs a rule's tick with the test clock's now.
        ---@param rule string
        ---@return RunResult
        function tick(rule) end
        ---An event from samples/ by name, decoded as the server would.
        ---@param name string "channel_create__inbound"
        ---@param hook? string
        ---@return Event
        function sample(name, hook) end
        ---@param format "json"|"form"|"query"
        ---@param body string
        ---@param hook? string
        ---@return Event
        function decode(format, body, hook) end

        ---@class Expectation
        ---@field to_be fun(expected: any)
        ---@field to_equal fun(expected: any)
        ---@field not_to_be fun(other: any)
        ---@field to_be_nil fun()
        ---@field to_be_truthy fun()
        ---@field to_be_falsy fun()
        ---@field to_contain fun(part: any)
        ---@field to_match fun(pattern: string)
        ---@field to_have_length fun(n: integer)

        ---@param actual any
        ---@return Expectation
        function expect(actual) end

        ---The test's clock (store TTLs, count windows, call-state expiry, tick's now).
        clock = {}
        ---@param unix number
        function clock.set(unix) end
        ---@param seconds number|string
        function clock.advance(seconds) end
        ---@return number
        function clock.now() end
        """#
}
