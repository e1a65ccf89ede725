// Test-only: writes one file through AtomicFile so a test can SIGKILL it mid-write.
// Usage: atomic-write-probe DESTINATION MEBIBYTES FILL-BYTE

import Foundation
import ParityEngine

let arguments = CommandLine.arguments
guard arguments.count == 4, let mebibytes = Int(arguments[2]), let fill = UInt8(arguments[3]) else {
    FileHandle.standardError.write(Data("usage: atomic-write-probe DESTINATION MEBIBYTES FILL-BYTE\n".utf8))
    exit(64)
}
do {
    try AtomicFile.write(Data(repeating: fill, count: mebibytes << 20), to: URL(fileURLWithPath: arguments[1]))
} catch {
    print("ERROR \(error)")
    exit(1)
}
