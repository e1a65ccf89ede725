import ArgumentParser
import Foundation
import ParityEngine

/// Shows what a golden holds: provenance, groups, datasets, shapes, dtypes and attributes.
public struct InspectCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a golden's provenance, groups, datasets (shape, dtype, size) and attributes.")

    @Argument(help: "An HDF5 golden file.")
    var file: String

    @Flag(name: .long, help: "List every dataset and print attribute values whole.")
    var full = false

    @Option(name: .long, help: "Only this group's subtree, e.g. /probes.")
    var group: String?

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    public init() {}

    public func run() throws {
        let inspection: GoldenInspection
        do {
            inspection = try GoldenInspection.read(file)
        } catch {
            FileHandle.standardError.write(Data("qwen-parity inspect: error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if json {
            print(String(decoding: try inspection.json(), as: UTF8.self))
        } else {
            print(inspection.render(full: full, group: group, style: .detect()))
        }
    }
}
