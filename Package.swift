// swift-tools-version: 6.1
import PackageDescription

/// Settings every Swift target shares (STYLE.md: explicit `any`, visible imports, internal-by-default imports).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Switchboard",
    // Linux only: rule reload watches files with inotify, and Lua comes from Debian's liblua5.4-dev.
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .library(name: "KazooEvents", targets: ["KazooEvents"]),
        .library(name: "LuaRuntime", targets: ["LuaRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Settings: flags > SWITCHBOARD_* > the YAML file > defaults. Only the command-line provider's trait; the
        // YAML file is read with Yams so that unknown keys can be named (see ServeSettings.swift).
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["CommandLineArguments"]),
        // HMAC-SHA256 for signed forwards (Standard Webhooks).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // PostgreSQL for several nodes (`--store postgres://…`).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // HTTP/1 parts as swift-http-types values, for the hooks routes' own channel handler (Hummingbird's too),
        // and the listener's graceful shutdown (NIOExtras' ServerQuiescingHelper).
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    ],
    targets: [
        // Debian's Lua 5.4 (liblua5.4-dev), found through pkg-config. Never vendored.
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev"])]
        ),
        // The C we write for Lua: macro re-exports, trampolines that own every lua_error/lua_yield,
        // the budget hook, the capped allocator and the sandbox's base functions.
        .target(name: "CLuaShim", dependencies: ["CLua"]),
        // One process-wide SQLite setting that only C can make (sqlite3_config is variadic).
        .target(name: "CSQLiteTuning", linkerSettings: [.linkedLibrary("sqlite3")]),
        // One Sendable value type and a byte-level JSON reader/writer with limits. No Lua, no HTTP.
        .target(name: "JSONCore", swiftSettings: swiftSettings, linkerSettings: [.linkedLibrary("m")]),
        // The only Swift that imports CLua/CLuaShim: a safe API over one lua_State.
        .target(name: "LuaRuntime", dependencies: ["CLua", "CLuaShim", "JSONCore"], swiftSettings: swiftSettings),
        // Kazoo's webhook events: the typed model, the schema and the three wire formats.
        .target(name: "KazooEvents", dependencies: ["JSONCore"], swiftSettings: swiftSettings),
        // Rule files, the Lua host API (log, http, json, kazoo, env, forward) and running rules on events.
        .target(
            name: "RuleEngine",
            dependencies: [
                "LuaRuntime", "KazooEvents", "JSONCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // `switchboard test`: rule test files, HTTP mocks, expectations.
        .target(
            name: "RuleTesting", dependencies: ["RuleEngine", "LuaRuntime", "KazooEvents", "JSONCore"],
            swiftSettings: swiftSettings),
        // Everything durable: the journal of accepted events, the outbox and its attempt log, rejected bodies,
        // retention, de-duplication keys. SQLite (GRDB) is the embedded backend. No HTTP server.
        .target(
            name: "EventStore",
            dependencies: [
                "RuleEngine", "KazooEvents", "JSONCore", "CSQLiteTuning",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The PostgreSQL backend for several nodes: the same journal, outbox and store in a shared database,
        // the processing lease, node heartbeats, and the local spool for when the database is unreachable.
        .target(
            name: "ClusterStore",
            dependencies: [
                "RuleEngine", "EventStore", "KazooEvents", "JSONCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Sending forwards: the outbox service (the retry engine), the guarded HTTP client and its
        // internal-network policy.
        .target(
            name: "Delivery",
            dependencies: [
                "RuleEngine", "EventStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP server: the hooks routes' own channel handler, and Hummingbird's router for the rest (auth,
        // health, metrics, admin, the console).
        .target(
            name: "WebhookServer",
            dependencies: [
                "RuleEngine", "KazooEvents", "JSONCore", "EventStore", "Delivery",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The command-line interface as a library, so tests can drive it.
        .target(
            name: "SwitchboardCLI",
            dependencies: [
                "KazooEvents", "JSONCore", "LuaRuntime", "RuleEngine", "RuleTesting", "EventStore", "Delivery",
                "WebhookServer", "ClusterStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "switchboard",
            dependencies: ["SwitchboardCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings,
            // Linked by the toolchain's lld with relative relocations packed (DT_RELR, glibc 2.36 and later):
            // the loader reads a 16 KB bitmap instead of 1.4 MB of entries for the binary's 60,000 relative
            // relocations, and those pages no longer stay resident (idle RSS about 1.5 MB lower; README).
            linkerSettings: [
                .unsafeFlags(
                    ["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(platforms: [.linux]))
            ]
        ),
        // `make bench`: decode + Lua conversion + one rule call, beside the lua5.4 + cjson anchor.
        .executableTarget(
            name: "SwitchboardBench",
            dependencies: ["BenchSupport", "KazooEvents", "JSONCore", "LuaRuntime", "RuleEngine", "EventStore"],
            swiftSettings: swiftSettings
        ),
        // The engine row alone, for callgrind and perf (scripts/count_instructions.sh).
        .executableTarget(
            name: "SwitchboardEngineLoop", dependencies: ["BenchSupport", "KazooEvents", "RuleEngine"],
            swiftSettings: swiftSettings),
        .target(name: "BenchSupport", dependencies: ["KazooEvents", "RuleEngine"], swiftSettings: swiftSettings),
        // `make fuzz`: libFuzzer targets (built with --sanitize=fuzzer -DFUZZING; otherwise they replay files).
        .target(
            name: "FuzzTargets", dependencies: ["JSONCore", "KazooEvents", "LuaRuntime"], swiftSettings: swiftSettings),
        .executableTarget(name: "SwitchboardFuzz", dependencies: ["FuzzTargets"], swiftSettings: swiftSettings),
        // Test helpers shared by test targets: a real HTTP server on 127.0.0.1, a seeded random generator.
        .target(
            name: "TestSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "JSONCoreTests", dependencies: ["JSONCore", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FuzzRegressionTests", dependencies: ["FuzzTargets"], exclude: ["inputs"],
            swiftSettings: swiftSettings),
        .testTarget(name: "LuaRuntimeTests", dependencies: ["LuaRuntime", "JSONCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "KazooEventsTests",
            dependencies: ["KazooEvents", "JSONCore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RuleEngineTests",
            dependencies: [
                "RuleEngine", "KazooEvents", "JSONCore", "LuaRuntime", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RuleTestingTests", dependencies: ["RuleTesting", "RuleEngine", "LuaRuntime", "JSONCore"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "WebhookServerTests",
            dependencies: [
                "WebhookServer", "EventStore", "Delivery", "RuleEngine", "KazooEvents", "JSONCore", "LuaRuntime",
                "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The store's behaviour on SQLite and PostgreSQL (one suite, two backends) and the cluster's real-binary
        // checks. PostgreSQL comes from scripts/with_postgres.sh (`make test` runs it).
        .testTarget(
            name: "ClusterTests",
            dependencies: [
                "ClusterStore", "EventStore", "RuleEngine", "KazooEvents", "JSONCore", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardCLITests",
            dependencies: [
                "SwitchboardCLI", "KazooEvents", "JSONCore", "WebhookServer", "EventStore", "RuleEngine", "LuaRuntime",
                "RuleTesting", "TestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
    ]
)
