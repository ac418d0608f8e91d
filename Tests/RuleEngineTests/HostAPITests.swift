import Foundation
import JSONCore
import KazooEvents
import LuaRuntime
import RuleEngine
import TestSupport
import Testing

/// Runs `body` as a rule on the inbound channel_create sample and returns its outcome.
func outcome(
    of body: String, client: any OutboundHTTPClient = DryRunHTTPClient(),
    environment: [String: String] = [:], allowedEnvironment: Set<String> = []
) async throws -> RuleOutcome {
    let worker = try makeWorker(
        ["t.lua": runRule(body)], client: client, environment: environment,
        allowedEnvironment: allowedEnvironment)
    #expect(await worker.diagnostics == [])
    let report = await worker.process(try sample("channel_create__inbound.json"))
    return report.rules[0]
}

@Suite struct LogAPITests {
    @Test func logLinesCarryLevelMessageAndFields() async throws {
        let out = try await outcome(
            of: """
                log.debug("d") log.info("i", { a = 1 }) log.warn("w", {}) log.error("e", { nested = { x = true } })
                print("p", 1, nil, true)
                """)
        #expect(out.logs.map(\.level) == ["debug", "info", "warn", "error", "info"])
        #expect(out.logs[1].fields == ["a": 1])
        #expect(out.logs[3].fields == ["nested": ["x": true]])
        #expect(out.logs[4].message == "p\t1\tnil\ttrue")
    }

    @Test func badFieldsAreAnError() async throws {
        let out = try await outcome(of: "log.info('x', 'not a table')")
        #expect(out.outcome == .error)
        #expect(
            out.error?.message.contains("bad argument #2 to 'log.info' (table of fields expected, got string)") == true)
        #expect(out.error?.line == 5)  // the line inside runRule's template
    }
}

@Suite struct JSONAPITests {
    @Test func encodeDecodeNullAndMarkers() async throws {
        let out = try await outcome(
            of: """
                local s = json.encode({ b = 1, a = { json.null, 2.5 }, e = json.array(), o = json.object() })
                local v = json.decode('{"x":[1,{"y":null}],"z":{}}')
                local bad, err = json.decode('{"x":')
                log.info(s, { x2 = v.x[2].y == json.null, z = v.z, badnil = bad == nil, err = err })
                """)
        #expect(out.outcome == .ok)
        #expect(out.logs[0].message == #"{"a":[null,2.5],"b":1,"e":[],"o":{}}"#)
        #expect(out.logs[0].fields["x2"] == true)
        #expect(out.logs[0].fields["z"] == .object(JSONObject()))
        #expect(out.logs[0].fields["badnil"] == true)
        #expect(out.logs[0].fields["err"]?.stringValue?.contains("unexpected end of input") == true)
    }

    @Test func encodingAFunctionIsAnError() async throws {
        let out = try await outcome(of: "json.encode({ f = function() end })")
        #expect(out.outcome == .error)
        #expect(out.error?.message.contains("argument #1.f: a function cannot be converted") == true)
    }
}

@Suite struct KazooAPITests {
    /// Each of these stopped the process (a Double to Int64 conversion, or the epoch shift after it,
    /// overflowed); an event's `timestamp` can carry any 64-bit integer.
    @Test(arguments: [
        "kazoo.unix(0/0)", "kazoo.unix(math.huge)", "kazoo.gregorian(-math.huge)", "kazoo.gregorian(9.2233720e18)",
        "kazoo.unix(math.mininteger)",
    ])
    func timesOutOfRangeAreTheRulesError(call: String) async throws {
        let out = try await outcome(of: "local t = \(call)")
        #expect(out.outcome == .error)
        #expect(out.error?.message.contains("is not a time in seconds") == true, "\(out.error?.message ?? "")")
    }

    @Test func helpers() async throws {
        let out = try await outcome(
            of: """
                log.info("k", {
                  unix = kazoo.unix(63882919387), greg = kazoo.gregorian(1715700187),
                  e1 = kazoo.e164("(415) 555-0123"), e2 = kazoo.e164("1 415 555 0123"), e3 = kazoo.e164("+44 20 7946 0958"),
                  e4 = kazoo.e164("011 44 20 7946 0958"), e5 = kazoo.e164("020 7946 0958", "44"), bad = kazoo.e164("12"),
                  user = kazoo.user("sip:+14155550123@203.0.113.45:5060"), realm = kazoo.realm("+1415@pbx.example.net"),
                  ccv = kazoo.ccv(event, "resource_type"), ccv2 = kazoo.ccv(event, "Resource-Type"),
                })
                """)
        #expect(out.outcome == .ok, "\(out.error?.message ?? "")")
        let f = out.logs.first?.fields ?? .null
        #expect(f["unix"] == 1_715_700_187)
        #expect(f["greg"] == 63_882_919_387)
        #expect(f["e1"] == "+14155550123")
        #expect(f["e2"] == "+14155550123")
        #expect(f["e3"] == "+442079460958")
        #expect(f["e4"] == "+442079460958")
        #expect(f["e5"] == "+442079460958")
        #expect(f["bad"] == nil)
        #expect(f["user"] == "+14155550123")
        #expect(f["realm"] == "pbx.example.net")
        #expect(f["ccv"] == "offnet-origination")
        #expect(f["ccv2"] == "offnet-origination")
    }
}

@Suite struct EnvAPITests {
    @Test func onlySwitchboardAndAllowedVariables() async throws {
        let out = try await outcome(
            of: "log.info('e', { a = env('SWITCHBOARD_TOKEN'), b = env('CRM_KEY'), c = env('SWITCHBOARD_MISSING') })",
            environment: ["SWITCHBOARD_TOKEN": "t0k", "CRM_KEY": "k", "HOME": "/root"], allowedEnvironment: ["CRM_KEY"])
        #expect(out.logs.first?.fields == ["a": "t0k", "b": "k"])
        let denied = try await outcome(of: "env('HOME')", environment: ["HOME": "/root"])
        #expect(denied.outcome == .error)
        #expect(denied.error?.message.contains("env: HOME is not readable by rules") == true)
    }
}

@Suite struct ForwardAPITests {
    @Test func targetsInEveryShape() async throws {
        let out = try await outcome(
            of: """
                forward("https://a.example.com/x", { n = 1 })
                forward({ url = "https://b.example.com/y", method = "put", format = "form", headers = { ["X-K"] = "v" } },
                        { call = { id = "c1" }, tags = { "a", "b" } })
                forward({ "https://c.example.com/1", { url = "https://c.example.com/2" } }, json.array())
                """)
        #expect(out.outcome == .ok, "\(out.error?.message ?? "")")
        #expect(
            out.forwards.map(\.url) == [
                "https://a.example.com/x", "https://b.example.com/y", "https://c.example.com/1",
                "https://c.example.com/2",
            ])
        #expect(out.forwards[0].body == ["n": 1])
        #expect(out.forwards[0].headers["Content-Type"] == "application/json")
        #expect(out.forwards[1].method == "PUT")
        #expect(out.forwards[1].body == "call[id]=c1&tags[]=a&tags[]=b")
        #expect(out.forwards[1].headers["X-K"] == "v")
        #expect(out.forwards[2].body == .array([]))
    }

    @Test(arguments: [
        ("forward('ftp://x', {})", "is not an http:// or https:// URL"),
        (
            "forward({ url = 'https://x.example.com', fromat = 'form' }, {})",
            "unknown key 'fromat' (did you mean format?)"
        ),
        ("forward({ url = 'https://x.example.com', format = 'xml' }, {})", "format must be \"json\" or \"form\""),
        ("forward({ url = 'https://x.example.com', format = 'form' }, 'text')", "a form forward needs a table payload"),
    ])
    func badTargetsAreClearErrors(source: String, message: String) async throws {
        let out = try await outcome(of: source)
        #expect(out.outcome == .error)
        #expect(out.stage == "run")
        #expect(out.error?.message.contains(message) == true, "\(out.error?.message ?? "")")
    }
}

/// A loopback server and a live HTTP client for one test.
func liveFixture() async throws -> (LoopbackServer, LiveHTTPClient) {
    (try await LoopbackServer(), LiveHTTPClient())
}

/// Closes a fixture after the test, without making the test wait for it.
func close(_ server: LoopbackServer, _ client: LiveHTTPClient) {
    Task {
        try? await client.shutdown()
        try? await server.stop()
    }
}

@Suite struct HTTPAPITests {
    @Test func dryRunReturnsNilAndShowsTheRequest() async throws {
        let out = try await outcome(
            of: """
                local r, err = http.post("https://api.example.com/x", { a = 1 }, { headers = { ["X-Id"] = "7" } })
                log.info("r", { isnil = r == nil, err = err })
                """)
        #expect(
            out.http == [
                HTTPRecord(method: "POST", url: "https://api.example.com/x", status: nil, error: "dry run: not sent")
            ])
        #expect(out.logs.first?.fields == ["isnil": true, "err": "dry run: not sent"])
    }

    @Test func liveCallsReachARealServer() async throws {
        let (server, client) = try await liveFixture()
        defer { close(server, client) }
        let out = try await outcome(
            of: """
                local c = http.get("\(server.url("/customer?phone=%2B1415"))", { timeout = 60 })
                local e = http.request{ method = "PUT", url = "\(server.url("/echo"))", json = { n = 1 }, headers = { ["X-A"] = "b" }, timeout = 60 }
                local p = http.post("\(server.url("/echo"))", "raw body", { timeout = 60 })
                local s = http.get("\(server.url("/status/503"))", { timeout = 60 })
                log.info("r", { name = c.json.name, status = c.status, xtest = c.headers["x-test"],
                               method = e.json.method, body = e.json.body, xa = e.json.headers["x-a"],
                               ctype = e.json.headers["content-type"], raw = p.json.body, s = s.status, sbody = s.body })
                """, client: client)
        #expect(out.outcome == .ok, "\(out.error?.message ?? "")")
        let f = out.logs.first?.fields ?? .null
        #expect(f["name"] == "Acme")
        #expect(f["status"] == 200)
        #expect(f["xtest"] == "yes")
        #expect(f["method"] == "PUT")
        #expect(f["body"] == #"{"n":1}"#)
        #expect(f["xa"] == "b")
        #expect(f["ctype"] == "application/json")
        #expect(f["raw"] == "raw body")
        #expect(f["s"] == 503)
        #expect(f["sbody"] == "")
        #expect(out.http.map(\.status) == [200, 200, 200, 503])
    }

    @Test func timeoutsAndRefusedConnectionsAreNilAndAMessage() async throws {
        let (server, client) = try await liveFixture()
        defer { close(server, client) }
        let out = try await outcome(
            of: """
                local r, err = http.get("\(server.url("/slow?ms=30000"))", { timeout = 0.2 })
                local r2, err2 = http.get("http://127.0.0.1:1/nothing")
                log.info("t", { err = err, err2 = err2, r = r == nil })
                """, client: client)
        #expect(out.outcome == .ok, "\(out.error?.message ?? "")")
        #expect(out.logs.first?.fields["err"]?.stringValue?.contains("timed out") == true)
        #expect(out.logs.first?.fields["err2"] != nil)
        #expect(out.logs.first?.fields["r"] == true)
    }

    @Test(arguments: [
        ("http.get(5)", "bad argument #1 to 'http.get' (string expected, got integer)"),
        ("http.get('file:///etc/passwd')", "is not an http:// or https:// URL"),
        (
            "http.request{ url = 'https://x.example.com', tiemout = 1 }",
            "unknown option 'tiemout' (did you mean timeout?)"
        ),
        ("http.request{ url = 'https://x.example.com', body = 'a', json = {} }", "give body or json, not both"),
        ("http.request('https://x.example.com')", "table { url = ... } expected"),
    ])
    func badRequestsAreClearErrors(source: String, message: String) async throws {
        let out = try await outcome(of: source)
        #expect(out.outcome == .error)
        #expect(out.error?.message.contains(message) == true, "\(out.error?.message ?? "")")
    }

    @Test func httpWhileLoadingIsAClearError() async throws {
        let worker = try makeWorker([
            "a.lua": "http.get('https://x.example.com') return { on = 'sms', run = function() end }"
        ])
        let diagnostics = await worker.diagnostics
        #expect(diagnostics.count == 1)
        #expect(diagnostics.first?.message.contains("http.get is not available while a rule file is loading") == true)
        #expect(diagnostics.first?.line == 1)
    }
}

@Suite struct SignedForwardRuleTests {
    func outcome(_ sign: String, environment: [String: String]) async throws -> RuleOutcome? {
        let worker = try makeWorker(
            [
                "s.lua": """
                return { name = "s", on = "channel_create",
                  run = function(event) forward({ url = "https://x.example.com/in", sign = "\(sign)" }, { a = 1 }) end }
                """
            ], environment: environment, allowedEnvironment: ["CRM_SECRET"])
        return await worker.process(try sample("channel_create__inbound.json"), meta: ["id": "ev-1"]).rules.first
    }

    @Test func aSignedForwardNamesItsSecretAndCarriesAStableId() async throws {
        let ok = try await outcome("SWITCHBOARD_SECRET", environment: ["SWITCHBOARD_SECRET": "k"])
        #expect(ok?.outcome == .ok)
        #expect(ok?.forwards.first?.headers["webhook-id"] == "msg_ev-1_s_1")
        #expect(ok?.forwards.first?.headers["switchboard-sign-with"] == "SWITCHBOARD_SECRET")
        #expect(try await outcome("CRM_SECRET", environment: ["CRM_SECRET": "k"])?.outcome == .ok)
        let unreadable = try await outcome("HOME", environment: ["HOME": "/root"])
        #expect(unreadable?.error?.message.contains("rules may only use SWITCHBOARD_* variables") == true)
        let unset = try await outcome("SWITCHBOARD_NOPE", environment: [:])
        #expect(unset?.error?.message.contains("the variable is not set") == true)
        let bad = try await outcome("not a name", environment: [:])
        #expect(bad?.error?.message.contains("sign must name the environment variable") == true)
    }
}
