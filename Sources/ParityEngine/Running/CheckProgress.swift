import Foundation

/// Progress of a long check on stderr: the golden, the step (a scenario's path, or an
/// invariant), the layer the forward pass is in, the time spent and an estimate of the time
/// left from the steps done so far. Silent for the first seconds, so tiny goldens print nothing;
/// then at most one line every few seconds.
public final class CheckProgress: @unchecked Sendable {
    public static let shared = CheckProgress()

    /// Seconds of work before the first line, and between lines.
    public var quietFor: TimeInterval = 5
    public var interval: TimeInterval = 5

    private let lock = NSLock()
    private var label = ""
    private var step = "", stepIndex = 0, stepCount = 0
    private var started = Date(), stepsStarted = Date(), lastPrinted = Date.distantPast
    private var layerText = ""

    /// A new batch of `count` steps (e.g. every scenario path of one golden).
    public func begin(_ label: String, steps count: Int) {
        lock.lock(); defer { lock.unlock() }
        if self.label.isEmpty || self.label != label { started = Date() }
        self.label = label
        stepCount = count
        stepIndex = 0
        stepsStarted = Date()
        step = ""
        layerText = ""
    }

    /// Step `index` (0-based) of the batch begins.
    public func step(_ index: Int, _ name: String) {
        lock.lock(); defer { lock.unlock() }
        stepIndex = index
        step = name
        layerText = ""
        printIfDue()
    }

    /// The forward pass finished layer `index`.
    public func layer(_ index: Int, of count: Int) {
        lock.lock(); defer { lock.unlock() }
        layerText = ", layer \(index + 1)/\(count)"
        printIfDue()
    }

    private func printIfDue() {
        let now = Date()
        guard !label.isEmpty, now.timeIntervalSince(started) >= quietFor, now.timeIntervalSince(lastPrinted) >= interval else { return }
        lastPrinted = now
        let spent = now.timeIntervalSince(stepsStarted)
        var left = ""
        if stepIndex > 0 && stepCount > stepIndex {
            left = ", ~" + Self.duration(spent / Double(stepIndex) * Double(stepCount - stepIndex)) + " left"
        }
        let line = "[check] \(label): \(step) (\(stepIndex + 1)/\(stepCount))\(layerText), "
            + Self.duration(now.timeIntervalSince(started)) + " elapsed\(left)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func duration(_ seconds: TimeInterval) -> String {
        seconds < 90 ? String(format: "%.0f s", seconds) : String(format: "%.0f min %02.0f s", (seconds / 60).rounded(.down),
                                                                  seconds.truncatingRemainder(dividingBy: 60))
    }
}
