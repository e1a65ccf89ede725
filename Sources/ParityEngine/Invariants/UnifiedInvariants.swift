import Foundation
import ParityCore
import ParityTensor
import UnifiedModel
import VLMMirror

// The unified (patched) model's invariants: the upstream change's test list (docs/upstream-change.md)
// as declared equivalences. Declared in InvariantRegistry.all; measured here.

/// One MRoPE input case stored under /inputs/mrope/<name> (docs/golden-format.md).
struct MRoPECase {
    var name: String
    /// `[1, N]`, N ≥ the prompt length: token ids past the prompt are the case's decode tokens.
    var tokens: [[Int]]
    /// `[1, Lp, D]`: the prompt as the library fed it (image features merged, or the model's own embeddings).
    var embeddings: Tensor
    /// `[3, 1, Lp]` and the rope deltas the library computed (or the upstream vector's).
    var positions: PositionIDs
    var ropeDeltas: [Int]
    var imageGrid: [[Int]]?

    var promptLength: Int { embeddings.shape[1] }

    static func read(_ golden: GoldenFile, _ name: String) throws -> MRoPECase? {
        let g = "/inputs/mrope/" + name
        guard golden.file.exists(g + "/position_ids"), golden.file.exists(g + "/input_embeddings") else { return nil }
        let p = try golden.file.readInt32s(g + "/position_ids")
        guard p.shape.count == 3, p.shape[0] == 3 else {
            throw GoldenError.invalid(file: golden.path, path: g + "/position_ids", reason: "shape \(p.shape), expected [3, B, L]")
        }
        let c = MRoPECase(
            name: name, tokens: try golden.tokenRows(g + "/token_ids"), embeddings: try golden.tensor(g + "/input_embeddings"),
            positions: PositionIDs(batch: p.shape[1], length: p.shape[2], values: p.values.map(Int.init)),
            ropeDeltas: try golden.file.readInt32s(g + "/rope_deltas").values.map(Int.init),
            imageGrid: golden.file.exists(g + "/image_grid_thw") ? try golden.tokenRows(g + "/image_grid_thw") : nil)
        guard c.embeddings.rank == 3, c.embeddings.shape[0] == 1, c.positions.length == c.promptLength,
              c.tokens.count == 1, c.tokens[0].count >= c.promptLength else {
            throw GoldenError.invalid(file: golden.path, path: g, reason: "expected one row: positions and embeddings of the prompt, token ids at least as long")
        }
        return c
    }

    /// Where the unified model takes this prompt's positions from: get_rope_index when the case
    /// has an image grid (so the model computes them itself), otherwise the stored vector.
    var unifiedPositions: UnifiedPrompt.Positions {
        if let imageGrid { return .images(tokens: [Array(tokens[0].prefix(promptLength))], imageGrid: imageGrid) }
        return .precomputed(positions, ropeDeltas: ropeDeltas)
    }
}

extension InvariantRegistry {
    static func unifiedModel(_ c: InvariantContext) throws -> UnifiedTextModel {
        guard let unified = c.implementations.unified else {
            throw GoldenError.invalid(file: c.golden.path, path: "/config",
                                      reason: "no unified model: \(c.implementations.unifiedUnavailable ?? "not built")")
        }
        return unified
    }

    /// The MRoPE cases of a golden, in a stable order.
    static func mropeCases(_ golden: GoldenFile, _ names: [String]) throws -> [MRoPECase] {
        try names.compactMap { try MRoPECase.read(golden, $0) }
    }

    /// Decode tokens after a prompt: the case's own (token ids past its prompt), else the first
    /// tokens of the golden's text prompt.
    static func decodeTokens(_ golden: GoldenFile, _ c: MRoPECase, count: Int) throws -> [Int] {
        let own = Array(c.tokens[0].dropFirst(c.promptLength))
        if own.count >= count { return Array(own.prefix(count)) }
        return Array(try prompt(golden).prefix(count))
    }

    static func exactPairs(_ label: String, _ a: ScheduleResult, _ b: ScheduleResult, caches: Bool = true) -> [Measurement] {
        var out = [Measurement(label: "\(label) logits", difference: .measure(a.logits, b.logits)),
                   Measurement(label: "\(label) hidden states", difference: .measure(a.hiddenStates, b.hiddenStates)),
                   Measurement(label: "\(label) final norm", difference: .measure(a.finalNorm, b.finalNorm))]
        if caches, let x = a.cacheAfterPrompt, let y = b.cacheAfterPrompt {
            out.append(Measurement(label: "\(label) caches", difference: cacheDifference(x, y)))
        }
        return out
    }

    // MARK: unified-text-vs-lm

    /// Every text schedule of the golden (whole prompt, chunked, prefix + decode, token by token,
    /// left-padded batch) through the unified model with no stored state and through the lm
    /// mirror: the same code runs, so every logit, layer and cache must be identical.
    static func unifiedTextVersusLM(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        var out: [Measurement] = []
        for scenario in try c.golden.scenarios() where scenario.kind != .mrope && scenario.paths.contains("mlx_lm")
            && (c.scenarios?.contains(scenario.name) ?? true) {
            let input = try GoldenParity.scheduleInput(c.golden, scenario, path: "mlx_lm")
            unified.clearPredictionState()
            let ours = try ScheduleRunner.run(unified, input)
            let lm = try ScheduleRunner.run(c.implementations.lm, input)
            out += exactPairs(scenario.name, ours, lm)
        }
        return out
    }

    // MARK: unified-image-vs-vlm

    /// The golden's MRoPE prompts through the unified model (positions stored from the prompt)
    /// and through the vlm mirror as mlx-vlm's generate drives it (the whole prompt's position_ids
    /// and rope_deltas with every chunk, then decodes by token id): identical.
    static func unifiedImageVersusVLM(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        guard let makeVLM = c.implementations.makeVLM else { return [] }
        var out: [Measurement] = []
        // 1. Every stored generate-style mlx-vlm schedule (upstream vectors, chunk sweeps, the
        //    chunked image prompt made correctly), replayed on both.
        for scenario in try c.golden.scenarios() where scenario.kind == .mrope && (c.scenarios?.contains(scenario.name) ?? true) {
            for path in ["mlx_vlm", "mlx_vlm_correct"] where scenario.paths.contains(path) {
                guard let calls = try c.golden.schedule(scenario, path: path), let plan = GenerateStylePlan(calls) else { continue }
                let vlm = try ScheduleRunner.run(makeVLM(), .calls(calls))
                let ours = try runUnified(unified, plan.prompt, calls: plan.promptCalls, decode: plan.decode)
                out += exactPairs("\(scenario.name) \(path)", ours, vlm, caches: false)
            }
        }
        // 2. The image prompt with its positions computed by the unified model (get_rope_index over
        //    its tokens and grid), whole and in generate's [L-1, 1], then decodes.
        for mc in try mropeCases(c.golden, ["image_prompt"]) where mc.imageGrid != nil {
            let decode = try decodeTokens(c.golden, mc, count: 3)
            let L = mc.promptLength
            for calls in [[L], [L - 1, 1]] {
                let vlmCalls = generateStyleCalls(mc, calls: calls, decode: decode)
                let vlm = try ScheduleRunner.run(makeVLM(), .calls(vlmCalls))
                let ours = try runUnified(unified, UnifiedPrompt(input: .embeddings(mc.embeddings), positions: mc.unifiedPositions),
                                          calls: calls, decode: decode.map { [[$0]] })
                out += exactPairs("\(mc.name) calls \(calls) + \(decode.count) decodes", ours, vlm, caches: false)
            }
        }
        // 3. The image prompts from pixel values, embedded by the Swift vision tower.
        out += try unifiedPixelPrompts(c, unified)
        return out
    }

    /// The calls mlx-vlm's generate makes for an MRoPE case: the whole prompt's positions and
    /// deltas with every prompt chunk, then one call per decode token without them.
    static func generateStyleCalls(_ mc: MRoPECase, calls: [Int], decode: [Int]) -> [ScheduledCall] {
        var out: [ScheduledCall] = []
        var start = 0
        let full = VLMPositions(axes: 3, batch: 1, length: mc.promptLength, values: mc.positions.values)
        for n in calls {
            let call = VLMCall(inputs: [Array(mc.tokens[0][start..<(start + n)])],
                               inputEmbeddings: mc.embeddings.slice(axis: 1, start: start, length: n),
                               positionIds: full, ropeDeltas: mc.ropeDeltas)
            out.append(ScheduledCall(call: call, cache: start == 0 ? .new(leftPadding: nil) : .keep, resetState: start == 0))
            start += n
        }
        for token in decode { out.append(ScheduledCall(call: VLMCall(inputs: [[token]]), cache: .keep, resetState: false)) }
        return out
    }

    /// One unified prediction with every layer traced, in ScheduleRunner's shape.
    static func runUnified(_ unified: UnifiedTextModel, _ prompt: UnifiedPrompt, calls: [Int],
                           decode: [[[Int]]]) throws -> ScheduleResult {
        let recorder = TraceRecorder()
        let run = try unified.predict(prompt, calls: calls, decode: decode, trace: recorder)
        var hidden = [recorder.joined(.embeddings)!]
        for i in 0..<unified.config.numHiddenLayers { hidden.append(recorder.joined(.layerOutput(i))!) }
        return ScheduleResult(hiddenStates: Tensor.concatenate(hidden.map { $0.reshaped([1] + $0.shape) }, axis: 0),
                              finalNorm: recorder.joined(.finalNorm)!, logits: run.logits, cacheAfterPrompt: nil,
                              positionIds: run.calls.map { $0.positions.map { VLMPositions(axes: 3, batch: $0.batch, length: $0.length, values: $0.values) } },
                              callLengths: run.calls.map(\.length))
    }

    // MARK: unified-mrope-prefix-decode, unified-mrope-chunked-sweep

    /// The MRoPE prompts, each as the unified model stores its positions, plus decode tokens.
    static func mropePrompts(_ c: InvariantContext, _ names: [String]) throws -> [(MRoPECase, [Int])] {
        try mropeCases(c.golden, names).map { ($0, try decodeTokens(c.golden, $0, count: 3)) }
    }

    /// Prefill of the whole MRoPE prompt against prefix + one-token calls, both followed by the
    /// same decodes (upstream: model(all)[-1] == model(tokens[:-1]); model(tokens[-1])); and the
    /// prompt plus its decode tokens in a single call, which runs past the stored positions and
    /// needs the stitched tail, against the prompt then decodes.
    static func unifiedMRoPEPrefixDecode(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        var out: [Measurement] = []
        for (mc, decode) in try mropePrompts(c, ["prefill_decode", "image_prompt"]) {
            let L = mc.promptLength
            let prompt = UnifiedPrompt(input: .embeddings(mc.embeddings), positions: mc.unifiedPositions)
            let steps = decode.map { [[$0]] }
            let trace = c.implementations.unifiedTrace
            let whole = try unified.predict(prompt, calls: [L], decode: steps, trace: trace).logits
            for tail in [1, 4] where tail < L {
                let calls = [L - tail] + Array(repeating: 1, count: tail)
                let run = try unified.predict(prompt, calls: calls, decode: steps, trace: trace).logits
                out.append(Measurement(label: "\(mc.name) prefix \(L - tail) + \(tail) + \(decode.count) decodes",
                                       difference: .measure(run, whole)))
            }
            // The prompt and its decode tokens as one input: a call crossing the stored end.
            let extended = UnifiedPrompt(input: .embeddings(Tensor.concatenate([mc.embeddings, try unified.embeddings(of: [decode])], axis: 1)),
                                         positions: mc.unifiedPositions)
            let stitched = try unified.predict(extended, calls: [L + decode.count], trace: trace).logits
            out.append(Measurement(label: "\(mc.name) one call of \(L)+\(decode.count) (stitched past the stored end)",
                                   difference: .measure(stitched, whole)))
        }
        return try withLibraryDistances(out, c, "unified-mrope-prefix-decode")
    }

    static func withLibraryDistances(_ out: [Measurement], _ c: InvariantContext, _ id: String) throws -> [Measurement] {
        guard !out.isEmpty else { return out }
        return try StoredLibraryDistances.read(c.golden, invariant: id).attach(out, golden: c.golden, invariant: id)
    }

    /// Chunked MRoPE prefill at every step 1…L (generate's rule) against the whole prompt, each
    /// followed by the same decodes: the upstream cases (boundary inside the image span, image
    /// span in a later chunk) and the image prompt.
    static func unifiedMRoPEChunkedSweep(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        var out: [Measurement] = []
        for (mc, decode) in try mropePrompts(c, ["chunk_boundary", "chunk_later", "image_prompt"]) {
            let L = mc.promptLength
            let prompt = UnifiedPrompt(input: .embeddings(mc.embeddings), positions: mc.unifiedPositions)
            let steps = decode.prefix(2).map { [[$0]] }
            let trace = c.implementations.unifiedTrace
            let whole = try unified.predict(prompt, calls: [L], decode: Array(steps), trace: trace).logits
            for step in 1...L {
                let calls = ScheduleRunner.generateCalls(promptLength: L, prefillStep: step)
                let run = try unified.predict(prompt, calls: calls, decode: Array(steps), trace: trace).logits
                out.append(Measurement(label: "\(mc.name) step \(step) \(calls)", difference: .measure(run, whole)))
            }
        }
        return try withLibraryDistances(out, c, "unified-mrope-chunked-sweep")
    }

    // MARK: unified-no-state-leak

    /// One model object serves a text prompt, an image prompt, then the text prompt again (and the
    /// image prompt again): each repeat is identical to its first run, and the text prompt after
    /// the image takes the mlx-lm route on every call.
    static func unifiedNoStateLeak(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        guard let image = try MRoPECase.read(c.golden, "image_prompt") else { return [] }
        let tokens = try prompt(c.golden)
        let L = tokens.count
        let text = UnifiedPrompt(input: .tokens([tokens]), positions: .text)
        let schedules = [[L], ScheduleRunner.generateCalls(promptLength: L, prefillStep: 5), [L - 4, 1, 1, 1, 1]]
        let imagePrompt = UnifiedPrompt(input: .embeddings(image.embeddings), positions: image.unifiedPositions)
        let imageDecode = try decodeTokens(c.golden, image, count: 3).map { [[$0]] }

        let before = try schedules.map { try unified.predict(text, calls: $0) }
        let imageFirst = try unified.predict(imagePrompt, calls: [image.promptLength], decode: imageDecode)
        let after = try schedules.map { try unified.predict(text, calls: $0) }
        let imageAgain = try unified.predict(imagePrompt, calls: [image.promptLength], decode: imageDecode)

        var out: [Measurement] = []
        for (i, calls) in schedules.enumerated() {
            out.append(Measurement(label: "text \(calls) after the image prompt vs before",
                                   difference: .measure(after[i].logits, before[i].logits)))
            var routes = Difference()
            routes.compared = after[i].calls.count
            routes.differingElements = after[i].calls.filter { $0.route != .text }.count
            if routes.differingElements > 0 { routes.maxAbs = .infinity }
            out.append(Measurement(label: "text \(calls) after the image prompt: calls off the mlx-lm route", difference: routes))
        }
        out.append(Measurement(label: "image prompt after the text prompt vs before",
                               difference: .measure(imageAgain.logits, imageFirst.logits)))
        return out
    }

    // MARK: unified-multi-image-positions

    /// For the golden's get_rope_index cases with images (one row, no mask, no video; the
    /// two-image case among them), every call's positions as the unified model used them, joined
    /// over the prompt: each image token's (T, H, W) equals the library's, and so does every other
    /// token's; two decode tokens get max + 1 − L + offset. Every chunking 1…L, and one call that
    /// also carries the decode tokens (past the stored end).
    static func unifiedMultiImagePositions(_ c: InvariantContext) throws -> [Measurement] {
        let unified = try unifiedModel(c)
        let imageToken = unified.multimodal.imageTokenId
        var out: [Measurement] = []
        for rc in try c.golden.ropeIndexCases() {
            guard let grid = rc.imageGrid, rc.videoGrid == nil, rc.attentionMask == nil, rc.inputIds.count == 1,
                  rc.positionIds.axes == 3, rc.ropeDeltas.count == 1 else { continue }
            let ids = rc.inputIds[0], L = ids.count
            let decode = Array(try prompt(c.golden).prefix(2))
            let delta = rc.ropeDeltas[0]
            // Expected [3, L + 2]: the library's positions, then the decode tokens' offset + delta.
            let expected: [[Int]] = (0..<3).map { a in
                (0..<L).map { rc.positionIds.at(axis: a, row: 0, t: $0) } + (0..<decode.count).map { L + $0 + delta }
            }
            let imageColumns = Set(ids.indices.filter { ids[$0] == imageToken })
            guard !imageColumns.isEmpty else { continue }
            var schedules: [(String, [Int], [Int])] = (1...L).map { step in
                ("step \(step)", ScheduleRunner.generateCalls(promptLength: L, prefillStep: step), decode)
            }
            schedules.append(("one call of \(L)+\(decode.count)", [L + decode.count], []))
            for (label, calls, steps) in schedules {
                let input = calls.count == 1 && steps.isEmpty ? ids + decode : ids
                let run = try unified.predict(UnifiedPrompt(input: .tokens([input]), positions: .images(tokens: [ids], imageGrid: grid)),
                                              calls: calls, decode: steps.map { [[$0]] })
                // The positions each call ran with, joined along time; a text-route call has none.
                var used: [[Int?]] = [[], [], []]
                for call in run.calls {
                    for a in 0..<3 {
                        used[a] += (0..<call.length).map { t in call.positions?.at(axis: a, row: 0, t: t) }
                    }
                }
                func difference(_ columns: [Int]) -> Difference {
                    let T = expected[0].count
                    guard used[0].count == T else {
                        var d = Difference(); d.compared = 1; d.differingElements = 1; d.maxAbs = .infinity; return d
                    }
                    let mine = Tensor(shape: [3, columns.count], data: (0..<3).flatMap { a in columns.map { Float(used[a][$0] ?? -1_000_000) } })
                    let theirs = Tensor(shape: [3, columns.count], data: (0..<3).flatMap { a in columns.map { Float(expected[a][$0]) } })
                    return .measure(mine, theirs)
                }
                out.append(Measurement(label: "\(rc.name) \(label) image tokens", difference: difference(imageColumns.sorted())))
                out.append(Measurement(label: "\(rc.name) \(label) other tokens and decodes",
                                       difference: difference((0..<(L + decode.count)).filter { !imageColumns.contains($0) })))
            }
        }
        return out
    }
}

/// A generate-style mlx-vlm schedule (docs/golden-format.md, schedule_json) as one unified
/// prediction: the prompt calls all carry the whole prompt's position_ids and rope_deltas; what
/// follows are decode calls by token id.
struct GenerateStylePlan {
    var prompt: UnifiedPrompt
    var promptCalls: [Int]
    var decode: [[[Int]]]

    init?(_ calls: [ScheduledCall]) {
        guard let first = calls.first, first.cache == .new(leftPadding: nil), first.resetState,
              let full = first.call.positionIds, full.axes == 3, let deltas = first.call.ropeDeltas else { return nil }
        let promptCalls = calls.prefix { $0.call.positionIds != nil }
        guard promptCalls.allSatisfy({ $0.call.positionIds == full && $0.call.ropeDeltas == deltas }),
              promptCalls.dropFirst().allSatisfy({ $0.cache == .keep && !$0.resetState }),
              promptCalls.reduce(0, { $0 + ($1.call.inputs.first?.count ?? 0) }) == full.length else { return nil }
        let input: ModelInput
        if promptCalls.allSatisfy({ $0.call.inputEmbeddings != nil }) {
            input = .embeddings(Tensor.concatenate(promptCalls.map { $0.call.inputEmbeddings! }, axis: 1))
        } else if promptCalls.allSatisfy({ $0.call.inputEmbeddings == nil }) {
            input = .tokens((0..<full.batch).map { b in promptCalls.flatMap { $0.call.inputs[b] } })
        } else {
            return nil
        }
        let rest = calls.dropFirst(promptCalls.count)
        guard rest.allSatisfy({ $0.cache == .keep && !$0.resetState && $0.call.positionIds == nil && $0.call.ropeDeltas == nil
                                && $0.call.inputEmbeddings == nil && $0.call.imageGrid == nil && $0.call.attentionMask == nil }) else {
            return nil
        }
        prompt = UnifiedPrompt(input: input, positions: .precomputed(
            PositionIDs(batch: full.batch, length: full.length, values: full.values), ropeDeltas: deltas))
        self.promptCalls = promptCalls.map { $0.call.inputs.first?.count ?? 0 }
        decode = rest.map { $0.call.inputs }
    }
}
