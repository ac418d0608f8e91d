import Foundation

/// Which of a program's streams `runToEnd` keeps; the other is the test process's own.
public enum CapturedStream: Sendable {
    case output
    case errors
}

/// Runs a program to its end and returns its exit status with what it wrote to `captured`. Reading a pipe to
/// its end and waiting for the program both block, so they happen on a thread of their own (`onOwnThread`),
/// not on one of the threads Swift's tasks share (two on a 2-core machine): every other test running
/// meanwhile needs those.
public func runToEnd(_ executable: String, _ arguments: [String], capturing captured: CapturedStream = .output)
    async throws -> (status: Int32, text: String)
{
    try await onOwnThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        switch captured {
        case .output: process.standardOutput = pipe
        case .errors: process.standardError = pipe
        }
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
