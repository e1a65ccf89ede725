import Checkpoint
import Foundation
import GoldenIO
import ParityCore
import ParityTensor
import VLMMirror

// Image prompts end to end (docs/golden-format.md, "Vision"): the Swift vision tower turns the
// golden's pixel values into features, merges them into the prompt's embeddings and computes the
// prompt's 3-D positions; each step is compared with what mlx-vlm recorded, and then the
// language calls run on Swift's own embeddings and positions, not the golden's.

/// Datasets a schedule reads that the harness computed itself (by dataset path).
public struct ScheduleSubstitutes: Sendable {
    public var tensors: [String: Tensor] = [:]
    public var ints: [String: H5Array<Int32>] = [:]
    public init() {}
}

/// One image prompt as the golden stores its inputs.
public struct GoldenImagePrompt {
    public var name: String
    /// `/inputs/vision/<name>`.
    public var group: String
    /// The prompt's token ids (decode ids excluded).
    public var ids: [[Int]]
    public var pixelValues: Tensor
    public var imageGrid: [[Int]]
}

extension GoldenFile {
    /// The tower's config from /vision config_json, or nil for a golden without a tower.
    public func visionConfig() throws -> VisionConfig? {
        guard file.exists("/vision") else { return nil }
        let source = "\(path): /vision config_json"
        let text = try file.stringAttribute("config_json", of: "/vision")
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let vision = object["vision_config"] as? [String: Any] else {
            throw GoldenError.invalid(file: path, path: "/vision config_json", reason: "no vision_config object")
        }
        return try VisionConfig.decode(JSONSerialization.data(withJSONObject: vision), source: source)
    }

    /// The vision tower of /vision, or nil for a golden without one. A model-directory golden's
    /// tower is the directory's own, read in place (the golden's float32 copy of it, what mlx-vlm
    /// ran, is then only what its image rows are measured against); others use /vision/weights.
    public func visionTower(directory: ModelDirectory? = nil) throws -> VisionTower? {
        guard let config = try visionConfig() else { return nil }
        if let directory {
            let values = try directory.visionWeights(config: config)
            if !values.isEmpty {
                do {
                    return try VisionTower(config: config, values: values)
                } catch let error as VisionError {
                    throw GoldenError.invalid(file: directory.path, path: "vision_tower", reason: error.description)
                }
            }
        }
        var weights: [String: Tensor] = [:]
        for name in try file.children(of: "/vision/weights") {
            weights[name] = try tensor("/vision/weights/" + name)
        }
        do {
            return try VisionTower(config: config, weights: weights)
        } catch let error as VisionError {
            throw GoldenError.invalid(file: path, path: "/vision/weights", reason: error.description)
        }
    }

    public func imagePrompt(_ scenario: GoldenScenario) throws -> GoldenImagePrompt {
        guard let group = scenario.visionInputs else {
            throw GoldenError.invalid(file: path, path: "/scenarios/\(scenario.name)", reason: "not an image scenario")
        }
        guard file.isGroup(group) else {
            throw GoldenError.invalid(file: path, path: group, reason: "no such group (named by /scenarios/\(scenario.name) vision_inputs)")
        }
        let length = try file.intAttribute("prompt_length", of: group)
        let rows = try tokenRows(group + "/token_ids")
        guard length > 0, rows.allSatisfy({ $0.count >= length }) else {
            throw GoldenError.invalid(file: path, path: group + " prompt_length", reason: "\(length) for token rows of \(rows.first?.count ?? 0)")
        }
        let grid = try ints(group + "/image_grid_thw", expectingRank: 2)
        let gridRows = (0..<grid.shape[0]).map { r in (0..<grid.shape[1]).map { Int(grid.values[r * grid.shape[1] + $0]) } }
        return GoldenImagePrompt(name: String(group.split(separator: "/").last ?? ""), group: group,
                                 ids: rows.map { Array($0[..<length]) },
                                 pixelValues: try tensor(group + "/pixel_values"), imageGrid: gridRows)
    }
}

enum ImagePromptParity {
    /// The item after the tower's steps: features scattered into the token embeddings.
    static let mergedStep = "merged embeddings"

    /// The vision half of an image scenario on the vlm mirror: rows for every tower step, the
    /// merged embeddings and the prompt's positions and deltas (all exact), and the substitutes
    /// that make the language calls read Swift's values.
    static func check(_ golden: GoldenFile, _ scenario: GoldenScenario, reference: String, implementation: String,
                      model: VLMTextModel, tower: VisionTower) throws -> ([ParityRow], ScheduleSubstitutes) {
        let prompt = try golden.imagePrompt(scenario)
        let recorded = "/vision/" + prompt.name
        var rows: [ParityRow] = []
        func row(_ item: String, _ d: Difference?, pass: Bool, note: String = "") {
            rows.append(ParityRow(file: golden.name, scenario: scenario.name, reference: reference,
                                  implementation: implementation, item: item, difference: d,
                                  tolerance: .exact, verdict: pass ? .pass : .fail, note: note))
        }
        func compare(_ item: String, _ actual: Tensor, _ dataset: String) throws {
            let expected = try golden.tensor(dataset)
            guard expected.shape == actual.shape else {
                row(item, nil, pass: false, note: "shape: Swift \(actual.shape), \(dataset) holds \(expected.shape)")
                return
            }
            let d = Difference.measure(actual, expected)
            row(item, d, pass: Tolerance.exact.accepts(d),
                note: d.differingElements > 0 ? "\(d.differingElements) differ, ULP \(d.histogramText)" : "")
        }

        var steps: [String: Tensor] = [:]
        let input = try multimodalInput(golden, prompt, model: model, tower: tower) { steps[$0] = $1 }
        let again = try multimodalInput(golden, prompt, model: model, tower: tower)
        let same = again.embeddings.data.elementsEqual(input.embeddings.data) { $0.bitPattern == $1.bitPattern }
        row("vision: self, 2 runs (bitwise)", nil, pass: same, note: same ? "" : "the merged embeddings of two runs differ")

        // Positions first: a position bug is reported as one.
        let expectedPositions = try golden.ints(prompt.group + "/position_ids", expectingRank: 3)
        let mine = input.positionIds.threeAxes
        let L = prompt.ids[0].count
        var positionValues: [Int32] = []
        for a in 0..<3 { for b in 0..<mine.batch { for t in 0..<L { positionValues.append(Int32(mine.at(axis: a, row: b, t: t))) } } }
        let positionsMatch = expectedPositions.shape == [3, mine.batch, L] && expectedPositions.values == positionValues
        row("prompt position ids", nil, pass: positionsMatch,
            note: positionsMatch ? "\(L) tokens, 3 axes" : "Swift \(positionValues), mlx-vlm \(expectedPositions.values) (shape \(expectedPositions.shape))")
        let expectedDeltas = try golden.ints(prompt.group + "/rope_deltas", expectingRank: 2)
        let deltaValues = input.ropeDeltas.map(Int32.init)
        let deltasMatch = expectedDeltas.values == deltaValues
        row("prompt rope deltas", nil, pass: deltasMatch,
            note: deltasMatch ? "\(deltaValues)" : "Swift \(deltaValues), mlx-vlm \(expectedDeltas.values)")

        let order = try golden.file.stringAttribute("steps_json", of: recorded)
        guard let names = try? JSONDecoder().decode([String].self, from: Data(order.utf8)), !names.isEmpty else {
            throw GoldenError.invalid(file: golden.path, path: recorded + " steps_json", reason: "expected a list of step names")
        }
        for name in names {
            guard let value = steps[name] else {
                row("vision " + name, nil, pass: false, note: "the Swift tower has no step '\(name)'")
                continue
            }
            try compare("vision " + name, value, recorded + "/" + name)
        }
        try compare(mergedStep, input.embeddings, prompt.group + "/input_embeddings")

        return (rows, substitutes(prompt, input))
    }

    /// get_input_embeddings on the mirror, with a vision error named by the prompt's group.
    static func multimodalInput(_ golden: GoldenFile, _ prompt: GoldenImagePrompt, model: VLMTextModel,
                                tower: VisionTower, trace: VisionTrace? = nil) throws -> MultimodalInput {
        do {
            return try model.inputEmbeddings(ids: prompt.ids, pixelValues: prompt.pixelValues,
                                              imageGrid: prompt.imageGrid, tower: tower, trace: trace)
        } catch let error as VisionError {
            throw GoldenError.invalid(file: golden.path, path: prompt.group, reason: error.description)
        }
    }

    /// The prompt's merged embeddings, positions and deltas in place of the golden's.
    static func substitutes(_ prompt: GoldenImagePrompt, _ input: MultimodalInput) -> ScheduleSubstitutes {
        let p = input.positionIds.threeAxes
        var values: [Int32] = []
        for a in 0..<3 { for b in 0..<p.batch { for t in 0..<p.length { values.append(Int32(p.at(axis: a, row: b, t: t))) } } }
        var out = ScheduleSubstitutes()
        out.tensors[prompt.group + "/input_embeddings"] = input.embeddings
        out.ints[prompt.group + "/position_ids"] = H5Array(shape: [3, p.batch, p.length], values: values)
        out.ints[prompt.group + "/rope_deltas"] = H5Array(shape: [input.ropeDeltas.count, 1], values: input.ropeDeltas.map(Int32.init))
        return out
    }
}
