import ArgumentParser
import SwitchboardCLI

// Parse and run by hand so async subcommands run asynchronously on Linux, where the library's
// availability-gated `AsyncParsableCommand.main()` is not picked from top-level code.
do {
    var command = try SwitchboardCommand.parseAsRoot()
    if var asyncCommand = command as? any AsyncParsableCommand {
        try await asyncCommand.run()
    } else {
        try command.run()
    }
} catch {
    SwitchboardCommand.exit(withError: error)
}
