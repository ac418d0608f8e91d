import ArgumentParser
import SwitchboardCLI

/// The executable's entry point: the root command from SwitchboardCLI, run asynchronously.
@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = SwitchboardCommand.configuration
}
