public import ArgumentParser
import Foundation
import JSONCore
import RuleEngine
public import RuleTesting

/// `switchboard test`: run rule test files.
public struct TestCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run rule tests (*_test.lua, and files under tests/) with HTTP mocks and assertions.",
        discussion: """
            A test file calls test("name", function() ... end). Inside a test: sample("name") loads an event \
            from samples/, decode(format, body) decodes a raw body, run("rule-name", event) runs one rule and \
            returns what it did, http.mock{ method =, url =, status =, json = } answers the rule's HTTP calls, \
            and expect(value).to_be(expected) asserts (with a diff for tables). An HTTP call nothing mocks \
            fails the test. Each test gets freshly loaded rules and its own mocks.

            Output: one line per test, failures with file:line and the diff, and a last line \
            "N passed, N failed". Exit status 1 when a test failed or a test file failed to load.

            Examples:
              switchboard test
              switchboard test crm            only tests whose name or file contains "crm"
              switchboard test --junit build/rules.xml
            """
    )

    @OptionGroup var options: RulesOptions

    @Option(name: .long, help: ArgumentHelp("Where sample(\"name\") looks for events.", valueName: "dir"))
    var samples: String = "samples"

    @Flag(name: .long, help: "Print the results as one JSON document.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also write the results as JUnit XML to this file.", valueName: "file"))
    var junit: String?

    @Argument(help: "Run only tests whose name or file path contains this.")
    var pattern: String?

    public init() {}

    public func run() async throws {
        let source: RuleSource
        do { source = try RuleSource.read(directory: options.rules) } catch {
            throw ValidationError("\(error)")
        }
        let runner = TestRunner(source: source, samplesDirectory: samples, configuration: options.configuration)
        let report = await runner.run(pattern: pattern)
        print(json ? TestOutput.json(report) : TestOutput.text(report, testFiles: source.tests.count))
        if let junit {
            do { try Data(TestOutput.junit(report).utf8).write(to: URL(fileURLWithPath: junit)) } catch {
                throw ValidationError("cannot write \(junit): \(error.localizedDescription)")
            }
        }
        if !report.ok { throw ExitCode(1) }
    }
}

/// How test results are shown.
public enum TestOutput {
    public static func text(_ report: TestReport, testFiles: Int) -> String {
        var lines: [String] = []
        for d in report.loadErrors { lines.append(d.description) }
        var lastFile: String? = nil
        for result in report.results {
            if result.file != lastFile {
                lines.append(result.file)
                lastFile = result.file
            }
            let time = String(format: "%.0f ms", result.milliseconds)
            lines.append("  \(result.passed ? "PASS" : "FAIL") \(result.name) (\(time))")
            if let failure = result.failure {
                let location = failure.file.map { "\($0):\(failure.line.map(String.init) ?? "?"): " } ?? ""
                let message = location + failure.message
                lines.append(
                    contentsOf: message.split(separator: "\n", omittingEmptySubsequences: false).map { "      \($0)" })
            }
        }
        if testFiles == 0 {
            lines.append("no test files (name them *_test.lua, beside the rules or under tests/)")
        }
        lines.append("\(report.passed) passed, \(report.failed) failed")
        return lines.joined(separator: "\n")
    }

    public static func json(_ report: TestReport) -> String {
        let tests: [JSONValue] = report.results.map { r in
            var failure: JSONValue = .null
            if let f = r.failure {
                failure = [
                    "message": .string(f.message), "file": f.file.map(JSONValue.string) ?? .null,
                    "line": f.line.map { .int(Int64($0)) } ?? .null,
                ]
            }
            return [
                "file": .string(r.file), "name": .string(r.name), "line": r.line.map { .int(Int64($0)) } ?? .null,
                "passed": .bool(r.passed), "milliseconds": .double(r.milliseconds), "failure": failure,
            ]
        }
        let document: JSONValue = [
            "tests": .array(tests), "passed": .int(Int64(report.passed)), "failed": .int(Int64(report.failed)),
            "load_errors": .array(report.loadErrors.map { .string($0.description) }),
        ]
        return DecodeReport.lossyJSON(document)
    }

    public static func junit(_ report: TestReport) -> String {
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        var xml = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>"]
        let failures = report.failed + report.loadErrors.count
        xml.append("<testsuites tests=\"\(report.results.count)\" failures=\"\(failures)\">")
        let files = Dictionary(grouping: report.results, by: \.file).sorted { $0.key < $1.key }
        for (file, results) in files {
            let seconds = results.map(\.milliseconds).reduce(0, +) / 1000
            xml.append(
                "  <testsuite name=\"\(escape(file))\" tests=\"\(results.count)\" failures=\"\(results.filter { !$0.passed }.count)\" time=\"\(seconds)\">"
            )
            for r in results {
                xml.append(
                    "    <testcase classname=\"\(escape(file))\" name=\"\(escape(r.name))\" time=\"\(r.milliseconds / 1000)\">"
                )
                if let f = r.failure {
                    let location = "\(f.file ?? file):\(f.line.map(String.init) ?? "?")"
                    xml.append(
                        "      <failure message=\"\(escape(f.message.split(separator: "\n").first.map(String.init) ?? ""))\">\(escape(location + ": " + f.message))</failure>"
                    )
                }
                xml.append("    </testcase>")
            }
            xml.append("  </testsuite>")
        }
        if !report.loadErrors.isEmpty {
            xml.append(
                "  <testsuite name=\"load errors\" tests=\"\(report.loadErrors.count)\" failures=\"\(report.loadErrors.count)\">"
            )
            for d in report.loadErrors {
                xml.append(
                    "    <testcase classname=\"\(escape(d.file))\" name=\"load\"><failure message=\"\(escape(d.message))\">\(escape(d.description))</failure></testcase>"
                )
            }
            xml.append("  </testsuite>")
        }
        xml.append("</testsuites>")
        return xml.joined(separator: "\n")
    }
}
