import TestSupport
import Foundation
import Testing
@testable import ParityEngine
@testable import UnifiedModel

/// Each unified-model invariant can fail: the unified model with one property broken on purpose
/// (its internal fault switches) fails exactly the invariants that depend on that property. The
/// other invariants never see the unified model (checked below), so the fault runs are limited to
/// the unified ones.
@Suite(.serialized) struct UnifiedInvariantFaultTests {
    let golden = try! GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)
    static let unifiedIDs = Set(InvariantRegistry.all.map(\.id).filter { $0.hasPrefix("unified-") })

    func failing(with fault: UnifiedFault) throws -> Set<String> {
        let implementations = try Implementations.standard(golden)
        let unified = try #require(implementations.unified)
        unified.faults = [fault]
        let rows = InvariantRegistry.run(golden, only: Self.unifiedIDs, implementations: implementations)
        #expect(rows.count == Self.unifiedIDs.count)
        let broken = rows.filter { $0.verdict == .error || $0.verdict == .notRun }
        #expect(broken.isEmpty, "\(broken.map { "\($0.invariant): \($0.detail)" })")
        return Set(rows.filter { $0.verdict == .fail }.map(\.invariant))
    }

    @Test(arguments: ["tiny-dense.h5", "tiny-moe.h5", "tiny-hv2-tied.h5"])
    func healthyUnifiedModelPassesEveryUnifiedInvariant(name: String) throws {
        let golden = try GoldenFile(path: goldenDirectory.appendingPathComponent(name).path)
        let rows = InvariantRegistry.run(golden, only: Self.unifiedIDs)
        #expect(Set(rows.map(\.invariant)) == Self.unifiedIDs)
        #expect(rows.allSatisfy { $0.verdict == .pass }, "\(rows.filter { $0.verdict != .pass }.map { "\($0.invariant): \($0.detail)" })")
    }

    /// Only the unified invariants read `Implementations.unified`: without it they are errors
    /// (never passes) and every other invariant still passes.
    @Test func onlyTheUnifiedInvariantsUseTheUnifiedModel() throws {
        var implementations = try Implementations.standard(golden)
        implementations.unified = nil
        implementations.unifiedUnavailable = "removed by the test"
        let rows = InvariantRegistry.run(golden, implementations: implementations)
        #expect(Set(rows.filter { $0.verdict == .error }.map(\.invariant)) == Self.unifiedIDs)
        #expect(rows.filter { !Self.unifiedIDs.contains($0.invariant) }.allSatisfy { $0.verdict == .pass })
        #expect(rows.first { $0.invariant == "unified-text-vs-lm" }?.detail.contains("removed by the test") == true)
    }

    /// Without clearPredictionState the image prompt's positions reach the next text prompt.
    @Test func staleStateBreaksOnlyTheLeakInvariant() throws {
        #expect(try failing(with: .skipClearPredictionState) == ["unified-no-state-leak"])
    }

    /// Chunks inside the prompt restarting at position 0: everything that chunks an MRoPE prompt.
    @Test func positionsRestartedPerChunkBreakTheChunkedMRoPEInvariants() throws {
        #expect(try failing(with: .restartPositionsPerChunk)
                == ["unified-image-vs-vlm", "unified-mrope-prefix-decode", "unified-mrope-chunked-sweep",
                    "unified-multi-image-positions"])
    }

    /// A slice one past the offset is wrong in every schedule alike, so a self-consistency bound
    /// could not see it; the comparisons with mlx-vlm and get_rope_index do, and so do the schedule
    /// invariants, whose distances no longer equal the library's own on the same pairs.
    @Test func anOffByOneSliceBreaksTheComparisonsWithTheLibraryPositions() throws {
        #expect(try failing(with: .offByOneSlice)
                == ["unified-image-vs-vlm", "unified-mrope-prefix-decode", "unified-mrope-chunked-sweep",
                    "unified-multi-image-positions"])
    }

    /// Only calls that cross the stored end need the stitched tail.
    @Test func aMissingStitchBreaksTheCallsThatCrossTheStoredEnd() throws {
        #expect(try failing(with: .noStitchPastStoredEnd) == ["unified-mrope-prefix-decode", "unified-multi-image-positions"])
    }

    /// A cache that never advances breaks every multi-call schedule, text and MRoPE; the leak
    /// invariant compares the model with itself, broken the same way before and after.
    @Test func aCacheThatDoesNotAdvanceBreaksEveryMultiCallInvariant() throws {
        #expect(try failing(with: .cacheDoesNotAdvance)
                == ["unified-text-vs-lm", "unified-image-vs-vlm", "unified-mrope-prefix-decode",
                    "unified-mrope-chunked-sweep", "unified-multi-image-positions"])
    }

    /// Every fault is exercised above.
    @Test func everyFaultHasATest() {
        #expect(Set(UnifiedFault.allCases) == [.skipClearPredictionState, .restartPositionsPerChunk, .offByOneSlice,
                                               .noStitchPastStoredEnd, .cacheDoesNotAdvance])
    }
}
