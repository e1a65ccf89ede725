import TestSupport
import Foundation
import ParityTensor
import Testing
@testable import ParityEngine
@testable import UnifiedModel

/// Every declared bound is pinned: the tolerance class of each invariant, and the rule of the
/// `.library` class (equal to the library's own distance, pair by pair). Widening any of them
/// makes a test here fail.
@Suite(.serialized) struct LibraryBoundTests {
    static let declared: [String: String] = [
        "golden-lm": "exact", "golden-vlm": "exact", "vlm-rope-index": "exact", "lm-uncached-vs-cached": "exact",
        "lm-prefill-vs-prefix-decode": "exact", "lm-chunked-sweep": "exact", "lm-batch-vs-single": "exact",
        "unified-text-vs-lm": "exact", "unified-image-vs-vlm": "exact",
        "unified-mrope-prefix-decode": "= library", "unified-mrope-chunked-sweep": "= library",
        "vision-image-alone-vs-batched": "exact", "unified-no-state-leak": "exact", "unified-multi-image-positions": "exact",
        "oracle-error-ratio": "<= 3x better",
    ]

    @Test func everyInvariantKeepsItsDeclaredClass() {
        let actual = Dictionary(uniqueKeysWithValues: InvariantRegistry.all.map { ($0.id, "\($0.tolerance)") })
        #expect(actual == Self.declared)
    }

    static let invariant = Invariant(id: "test-library", compares: "test", tolerance: .library) { _ in [] }

    func measurement(_ maxAbs: Float, differing: Int, library: LibraryPair?) -> ParityEngine.Measurement {
        var d = Difference()
        d.maxAbs = maxAbs; d.differingElements = differing; d.compared = 100
        var m = ParityEngine.Measurement(label: "pair", difference: d)
        m.library = library; m.libraryName = "mlx-vlm"; m.upstreamBound = 1e-4
        return m
    }

    /// Equal to the library passes; one ulp either way, one more or fewer differing element, or no
    /// stored pair fails.
    @Test func libraryClassMeansEqualPairByPair() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        let lib = LibraryPair(maxAbs: 3e-5, differing: 40, compared: 100)
        func verdict(_ m: ParityEngine.Measurement) -> InvariantRow.Verdict { InvariantRegistry.judge(Self.invariant, [m], golden).verdict }
        #expect(verdict(measurement(3e-5, differing: 40, library: lib)) == .pass)
        #expect(verdict(measurement(Float(3e-5).nextUp, differing: 40, library: lib)) == .fail)
        #expect(verdict(measurement(Float(3e-5).nextDown, differing: 40, library: lib)) == .fail)
        #expect(verdict(measurement(3e-5, differing: 41, library: lib)) == .fail)
        #expect(verdict(measurement(3e-5, differing: 39, library: lib)) == .fail)
        #expect(verdict(measurement(3e-5, differing: 40, library: nil)) == .fail)
    }

    /// The library past upstream's 1e-4, reproduced exactly: a finding, not a failure; the same
    /// excess with the port off the library's distance: a failure.
    @Test func libraryExcessIsAFindingOnlyWhenReproduced() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        let lib = LibraryPair(maxAbs: 3.9e-4, differing: 80, compared: 100)
        let reproduced = InvariantRegistry.judge(Self.invariant, [measurement(3.9e-4, differing: 80, library: lib)], golden)
        #expect(reproduced.verdict == .finding && reproduced.verdict.isSuccess)
        #expect(reproduced.detail.contains("mlx-vlm itself") && reproduced.detail.contains("3.90e-04"))
        let off = InvariantRegistry.judge(Self.invariant, [measurement(3.8e-4, differing: 80, library: lib)], golden)
        #expect(off.verdict == .fail)
        #expect(TextReport.summary([reproduced]).contains("1 library finding"))
    }

    /// A port fault on the unified model's vlm route (a nudged GatedDeltaNet output in layer 0)
    /// moves its schedule distances off mlx-vlm's: both library-class invariants fail.
    @Test func aNudgedSubStepInTheVLMRouteFailsTheLibraryClass() throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
        var implementations = try Implementations.standard(golden)
        implementations.unifiedTrace = FaultInjector(fault: SubStepFault(layer: 0, name: "core_out"), forwardingTo: nil)
        let ids: Set<String> = ["unified-mrope-prefix-decode", "unified-mrope-chunked-sweep"]
        let rows = InvariantRegistry.run(golden, only: ids, implementations: implementations)
        #expect(rows.count == 2 && rows.allSatisfy { $0.verdict == .fail }, "\(rows.map { "\($0.invariant) \($0.verdict) \($0.detail)" })")
        let healthy = InvariantRegistry.run(golden, only: ids)
        #expect(healthy.allSatisfy { $0.verdict == .pass }, "\(healthy.map { "\($0.invariant) \($0.verdict) \($0.detail)" })")
    }
}
