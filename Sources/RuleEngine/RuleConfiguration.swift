import Foundation
public import LuaRuntime

/// Settings for loading and running rules. Every setting has a default a user can rely on.
public struct RuleConfiguration: Sendable {
    /// Budget per rule run (instructions, Lua time) and per Lua state (memory).
    public var limits: LuaLimits
    /// Timeout of an `http.*` call that does not set one. Default 5 s.
    public var httpDefaultTimeout: Duration
    /// The longest timeout a rule may ask for. Default 30 s.
    public var httpMaxTimeout: Duration
    /// How long `call.*` state is kept after the call's channel_destroy, in seconds. Default 1 h.
    public var callStateKeep: Double = 3600
    /// Variables `env(name)` may read besides those starting with `SWITCHBOARD_`.
    public var allowedEnvironment: Set<String>
    /// Where `env()` reads from (the process environment by default; tests inject their own).
    public var environment: [String: String]

    public init(
        limits: LuaLimits = .default, httpDefaultTimeout: Duration = .seconds(5),
        httpMaxTimeout: Duration = .seconds(30),
        allowedEnvironment: Set<String> = [], environment: [String: String]? = nil
    ) {
        self.limits = limits
        self.httpDefaultTimeout = httpDefaultTimeout
        self.httpMaxTimeout = httpMaxTimeout
        self.allowedEnvironment = allowedEnvironment
        self.environment = environment ?? ProcessInfo.processInfo.environment
    }
}
