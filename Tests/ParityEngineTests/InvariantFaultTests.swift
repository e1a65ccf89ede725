import TestSupport
import Foundation
import LMMirror
import ParityCore
import ParityTensor
import Testing
@testable import ParityEngine

/// The lm mirror with one property broken on purpose.
final class FaultyModel: QwenLanguageModel {
    enum Fault: String, CaseIterable { case cacheDoesNotAdvance, cacheLostBetweenCalls, ignoresLeftPadding, leaksStateAcrossCalls }

    let inner: LMTextModel
    let fault: Fault
    private var calls = 0

    init(_ inner: LMTextModel, fault: Fault) { self.inner = inner; self.fault = fault }

    var config: TextConfig { inner.config }

    func makeCache(leftPadding: [Int]?) -> PromptCache {
        inner.makeCache(leftPadding: fault == .ignoresLeftPadding ? nil : leftPadding)
    }

    func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?, trace: TraceSink?) throws -> Tensor {
        calls += 1
        switch fault {
        case .cacheDoesNotAdvance:
            let before = cache?.layers
            defer { if let before { cache?.layers = before } }
            return try inner.forward(input, positionIds: positionIds, cache: cache, trace: trace)
        case .cacheLostBetweenCalls:
            if let cache, cache.firstAttention?.length ?? 0 > 0 {
                cache.layers = inner.makeCache(leftPadding: cache.firstAttention?.leftPadding).layers
            }
            return try inner.forward(input, positionIds: positionIds, cache: cache, trace: trace)
        case .ignoresLeftPadding:
            return try inner.forward(input, positionIds: positionIds, cache: cache, trace: trace)
        case .leaksStateAcrossCalls:
            // A one-ulp nudge on every other call the object serves: state left over from the
            // previous request changes the next one.
            var logits = try inner.forward(input, positionIds: positionIds, cache: cache, trace: trace)
            if calls % 2 == 0 { logits.data[0] = logits.data[0].nextUp }
            return logits
        }
    }
}

@Suite(.serialized) struct InvariantFaultTests {
    let golden = try! GoldenFile(path: goldenDirectory.appendingPathComponent("tiny-dense.h5").path)

    func failing(with fault: FaultyModel.Fault) throws -> Set<String> {
        var implementations = try Implementations.standard(golden)
        let lm = LMTextModel(config: golden.config, weights: try golden.weights())
        implementations.lm = FaultyModel(lm, fault: fault)
        let rows = InvariantRegistry.run(golden, implementations: implementations)
        #expect(rows.count == InvariantRegistry.all.count)
        let broken = rows.filter { $0.verdict == .error || $0.verdict == .notRun }
        #expect(broken.isEmpty, "\(broken.map { "\($0.invariant): \($0.detail)" })")
        return Set(rows.filter { $0.verdict == .fail }.map(\.invariant))
    }

    @Test func healthyMirrorPassesEveryInvariant() throws {
        let rows = InvariantRegistry.run(golden)
        #expect(rows.allSatisfy { $0.verdict == .pass }, "\(rows.filter { $0.verdict != .pass }.map(\.detail))")
    }

    // unified-text-vs-lm holds the (healthy) unified model against this lm mirror, so a broken lm
    // mirror fails it too, on the same schedules.

    @Test func cacheThatDoesNotAdvanceBreaksEveryMultiCallSchedule() throws {
        #expect(try failing(with: .cacheDoesNotAdvance)
                == ["golden-lm", "lm-prefill-vs-prefix-decode", "lm-chunked-sweep", "lm-batch-vs-single", "unified-text-vs-lm"])
    }

    @Test func lostCacheBreaksContinuationsButNotTheSingleCall() throws {
        #expect(try failing(with: .cacheLostBetweenCalls)
                == ["golden-lm", "lm-prefill-vs-prefix-decode", "lm-chunked-sweep", "lm-batch-vs-single", "unified-text-vs-lm"])
    }

    @Test func ignoredLeftPaddingBreaksOnlyTheBatch() throws {
        #expect(try failing(with: .ignoresLeftPadding) == ["golden-lm", "lm-batch-vs-single", "unified-text-vs-lm"])
    }

    /// One ulp in one logit is enough for the exact class.
    @Test func oneUlpOfLeakedStateIsCaught() throws {
        let failed = try failing(with: .leaksStateAcrossCalls)
        #expect(failed.contains("lm-uncached-vs-cached"))
        #expect(failed.contains("golden-lm"))
    }

    @Test func ulpAndAtolClassesJudgeAsDeclared() {
        let a = Tensor(shape: [3], data: [1, 2, 3])
        var b = a
        b.data[1] = b.data[1].nextUp.nextUp
        let d = Difference.measure(b, a)
        #expect(d.differingElements == 1 && d.maxULP == 2)
        #expect(!Tolerance.exact.accepts(d))
        #expect(!Tolerance.ulp(1).accepts(d) && Tolerance.ulp(2).accepts(d))
        #expect(Tolerance.atol(1e-6).accepts(d) && !Tolerance.atol(1e-8).accepts(d))
        var nan = a
        nan.data[0] = .nan
        #expect(!Tolerance.atol(1).accepts(Difference.measure(nan, a)))
        #expect(!Tolerance.atol(1).accepts(Difference.measure(a, nan)))
    }
}
