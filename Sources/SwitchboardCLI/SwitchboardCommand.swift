public import ArgumentParser

/// The `switchboard` command: receive Kazoo webhooks and run Lua rules on them.
public struct SwitchboardCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "Run Lua rules on Kazoo (2600Hz) webhooks.",
        discussion: """
            Kazoo fires webhooks for calls, notifications, object changes, parking, SMS and the callflow \
            webhook action. Switchboard decodes every wire format Kazoo uses (JSON, form-data with bracket \
            nesting, GET query strings) into one typed event.

            Start with:
              switchboard new my-rule --on channel_create
                                               write a rule and its test
              switchboard stubs                editor completion for rules/ (LuaLS)
              switchboard check                compile and validate the rules in rules/
              switchboard run samples/channel_create__inbound.json
                                               run the rules on a sample (dry run)
              switchboard decode samples/*     decode sample events, show typed fields
              switchboard events               list every event with its field types
              switchboard deliveries --failed  forwards still retrying (see also redeliver, rejected)
              switchboard replay --since 24h --against rules-next
                                               what a changed rule would do to real traffic
            """,
        version: "0.1.0",
        subcommands: [
            ServeCommand.self, RunCommand.self, CheckCommand.self, TestCommand.self, DecodeCommand.self,
            EventsCommand.self, DeliveriesCommand.self, RedeliverCommand.self, RejectedCommand.self, StoreCommand.self,
            NewCommand.self, StubsCommand.self, ReplayCommand.self, KazooCommand.self, NodesCommand.self,
        ]
    )

    public init() {}
}
