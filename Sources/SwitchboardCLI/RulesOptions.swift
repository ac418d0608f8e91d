public import ArgumentParser
import LuaRuntime
public import RuleEngine

/// Options every command that loads rules shares.
public struct RulesOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The rules directory (searched recursively).", valueName: "dir"))
    public var rules: String = "rules"

    @Option(
        name: .customLong("allow-env"),
        help: ArgumentHelp(
            "Let env(NAME) read this variable too (repeatable); SWITCHBOARD_* are always readable.",
            valueName: "name"))
    public var allowEnv: [String] = []

    @Option(name: .long, help: ArgumentHelp("VM instructions one rule run may execute.", valueName: "n"))
    public var maxInstructions: Int = LuaLimits.default.instructionLimit

    @Option(name: .long, help: ArgumentHelp("Milliseconds of Lua running time one rule run may take.", valueName: "ms"))
    public var timeLimitMs: Int = 1000

    @Option(name: .long, help: ArgumentHelp("Megabytes the Lua state holding the rules may use.", valueName: "mb"))
    public var maxMemoryMb: Int = LuaLimits.default.memoryLimit >> 20

    public init() {}

    public func validate() throws {
        guard maxInstructions > 0, timeLimitMs > 0, maxMemoryMb > 0 else {
            throw ValidationError("--max-instructions, --time-limit-ms and --max-memory-mb must be positive")
        }
    }

    public var configuration: RuleConfiguration {
        RuleConfiguration(
            limits: LuaLimits(
                memoryLimit: maxMemoryMb << 20, instructionLimit: maxInstructions,
                timeLimit: .milliseconds(timeLimitMs)),
            allowedEnvironment: Set(allowEnv))
    }
}
