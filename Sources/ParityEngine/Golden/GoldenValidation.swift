import GoldenIO
import ParityCore
import ParityTensor
import VLMMirror

// Checks everything a scenario run will read, before anything runs: the inputs and every stored
// reference tensor, against the shapes the schedule will produce (layout: docs/golden-format.md).
// A broken golden is then one error naming the file, the dataset or attribute and what was
// expected, found in a fraction of a second, not a mid-run failure or a comparison with NaN.

extension GoldenFile {
    /// Validates the scenarios `only` names (all when nil); every name must exist.
    public func validate(only: Set<String>? = nil) throws {
        let all = try scenarios()
        guard !all.isEmpty else {
            throw GoldenError.invalid(file: path, path: "/scenarios", reason: "holds no scenarios; expected at least one group such as no_cache")
        }
        if let only {
            let known = Set(all.map(\.name))
            if let missing = only.subtracting(known).sorted().first {
                throw GoldenError.invalid(file: path, path: "/scenarios/" + missing, reason: "no such scenario")
            }
        }
        for scenario in all where only?.contains(scenario.name) ?? true {
            try validate(scenario)
        }
    }

    func validate(_ scenario: GoldenScenario) throws {
        let group = "/scenarios/" + scenario.name
        let callsSite = group + " calls_json"
        guard !scenario.paths.isEmpty else {
            throw GoldenError.invalid(file: path, path: group, reason: "holds no reference results (expected a group such as mlx_lm)")
        }
        // Batch `B`, time steps `T` of the whole schedule, and `Tc` cached after the prompt.
        let (B, T, Tc): (Int, Int, Int)
        switch scenario.kind {
        case .mrope:
            // Explicit calls from each path's schedule_json, checked when the schedule is read;
            // here only that every stored tensor holds numbers.
            for reference in scenario.paths { try validateStoredTensors(group + "/" + reference) }
            return
        case .image:
            try validateImageInputs(scenario)
            for reference in scenario.paths { try validateStoredTensors(group + "/" + reference) }
            return
        case .single:
            let prompt = try promptTokens()
            guard prompt.count == 1 else {
                throw GoldenError.invalid(file: path, path: "/inputs/token_ids", reason: "expected one prompt row [1, L], found \(prompt.count) rows")
            }
            let length = prompt[0].count
            guard scenario.calls.allSatisfy({ $0 <= length }), scenario.calls.reduce(0, +) == length else {
                throw GoldenError.invalid(file: path, path: callsSite,
                    reason: "calls \(scenario.calls) must add up to the \(length) tokens of /inputs/token_ids")
            }
            guard scenario.cached || scenario.calls.count == 1 else {
                throw GoldenError.invalid(file: path, path: callsSite,
                    reason: "an uncached scenario (cached 0) makes exactly one call, found \(scenario.calls)")
            }
            (B, T, Tc) = (1, length, length)
        case .batch:
            let rows = try tokenRows("/inputs/batch/token_ids")
            let length = rows[0].count
            let padding = try ints("/inputs/batch/left_padding", expectingRank: 1).values
            guard padding.count == rows.count else {
                throw GoldenError.invalid(file: path, path: "/inputs/batch/left_padding",
                    reason: "expected one entry per row of /inputs/batch/token_ids (\(rows.count)), found \(padding.count)")
            }
            if let r = padding.firstIndex(where: { $0 < 0 || Int($0) >= length }) {
                throw GoldenError.invalid(file: path, path: "/inputs/batch/left_padding",
                    reason: "row \(r): left padding \(padding[r]) must be in 0..<\(length) so the row keeps a real token")
            }
            let decode = try tokenRows("/inputs/batch/decode_tokens")
            guard decode.allSatisfy({ $0.count == rows.count }) else {
                throw GoldenError.invalid(file: path, path: "/inputs/batch/decode_tokens",
                    reason: "expected shape [steps, \(rows.count)] (one token per batch row), found [\(decode.count), \(decode[0].count)]")
            }
            let expected = [length] + [Int](repeating: 1, count: decode.count)
            guard scenario.calls == expected else {
                throw GoldenError.invalid(file: path, path: callsSite,
                    reason: "a batch scenario calls the padded prompt then one decode step at a time: expected \(expected), found \(scenario.calls)")
            }
            (B, T, Tc) = (rows.count, length + decode.count, length)
        }
        for reference in scenario.paths {
            if GoldenParity.mirroredByLM.contains(reference) {
                try validateResults(scenario, base: group + "/" + reference, B: B, T: T, cachedSteps: Tc)
            } else {
                try validateStoredTensors(group + "/" + reference)   // mlx-vlm paths: shapes of their own
            }
        }
    }

    /// An image prompt's inputs against the tower's config: pixel rows of C·Tp·P·P values, one
    /// patch per grid cell, image tokens matching the merged grids, and the recorded merge and
    /// positions of the prompt's length.
    private func validateImageInputs(_ scenario: GoldenScenario) throws {
        guard let c = try visionConfig() else {
            throw GoldenError.invalid(file: path, path: "/vision", reason: "missing; image scenario \(scenario.name) needs the vision tower")
        }
        try validateTowerShapes(c)
        let prompt = try imagePrompt(scenario)
        let grids: [ImageGrid]
        do { grids = try VisionTower.grids(prompt.imageGrid, config: c) } catch {
            throw GoldenError.invalid(file: path, path: prompt.group + "/image_grid_thw", reason: "\(error)")
        }
        let patches = grids.reduce(0) { $0 + $1.patches }
        guard prompt.pixelValues.shape == [patches, c.patchValues] else {
            throw GoldenError.invalid(file: path, path: prompt.group + "/pixel_values",
                reason: "expected shape [\(patches), \(c.patchValues)] for the grids \(prompt.imageGrid) of \(prompt.group)/image_grid_thw, found \(prompt.pixelValues.shape)")
        }
        let L = prompt.ids[0].count
        try expectTensor(prompt.group + "/input_embeddings", shape: [prompt.ids.count, L, config.hiddenSize])
        let positions = try ints(prompt.group + "/position_ids", expectingRank: 3)
        guard positions.shape == [3, prompt.ids.count, L] else {
            throw GoldenError.invalid(file: path, path: prompt.group + "/position_ids",
                                      reason: "expected shape [3, \(prompt.ids.count), \(L)], found \(positions.shape)")
        }
        let recorded = "/vision/" + prompt.name
        guard file.isGroup(recorded) else {
            throw GoldenError.invalid(file: path, path: recorded, reason: "missing; the tower steps of \(prompt.group) are stored there")
        }
        for name in try file.children(of: recorded) { _ = try tensor(recorded + "/" + name) }
    }

    /// /vision/weights against the shapes the tower's config implies: shapes only, the values
    /// are read (and checked finite) where a tower is built from them.
    private func validateTowerShapes(_ c: VisionConfig) throws {
        var shapes: [String: [Int]] = [:]
        for name in try file.children(of: "/vision/weights") { shapes[name] = try file.datasetInfo("/vision/weights/" + name).shape }
        if let mismatch = c.parameterMismatch(shapes) {
            throw GoldenError.invalid(file: path, path: "/vision/weights", reason: mismatch)
        }
    }

    /// The result tensors a path stores, where present: numbers, finite.
    private func validateStoredTensors(_ base: String) throws {
        for name in ["hidden_states", "final_norm", "logits"] where file.exists(base + "/" + name) {
            _ = try tensor(base + "/" + name)
        }
    }

    private func validateResults(_ scenario: GoldenScenario, base: String, B: Int, T: Int, cachedSteps Tc: Int) throws {
        let c = config
        let D = c.hiddenSize
        try expectTensor(base + "/hidden_states", shape: [c.numHiddenLayers + 1, B, T, D])
        try expectTensor(base + "/final_norm", shape: [B, T, D])
        let positions = try ints(base + "/logits_positions", expectingRank: 1).values
        if let bad = positions.first(where: { $0 < 0 || Int($0) >= T }) {
            throw GoldenError.invalid(file: path, path: base + "/logits_positions",
                                      reason: "position \(bad) is outside the \(T) time steps of the schedule")
        }
        try expectTensor(base + "/logits", shape: [B, positions.count, c.vocabSize])

        guard scenario.cached else { return }
        let cacheGroup = base + "/cache_after"
        guard file.exists(cacheGroup) else {
            throw GoldenError.invalid(file: path, path: cacheGroup, reason: "missing; a cached scenario stores the cache after its prompt")
        }
        for (i, kind) in c.layerKinds.enumerated() {
            let layer = cacheGroup + "/layer_" + (i < 10 ? "0\(i)" : "\(i)")
            switch kind {
            case .fullAttention:
                let shape = [B, c.numKeyValueHeads, Tc, c.headDim]
                try expectTensor(layer + "/keys", shape: shape)
                try expectTensor(layer + "/values", shape: shape)
            case .linearAttention:
                try expectTensor(layer + "/conv_state", shape: [B, c.linearConvKernelDim - 1, c.convDim])
                try expectTensor(layer + "/recurrent_state",
                                 shape: [B, c.linearNumValueHeads, c.linearValueHeadDim, c.linearKeyHeadDim])
            }
        }
    }

    /// Reads (which rejects NaN and Inf) and checks the shape.
    private func expectTensor(_ dataset: String, shape: [Int]) throws {
        let found = try tensor(dataset).shape
        guard found == shape else {
            throw GoldenError.invalid(file: path, path: dataset, reason: "expected shape \(shape), found \(found)")
        }
    }
}
