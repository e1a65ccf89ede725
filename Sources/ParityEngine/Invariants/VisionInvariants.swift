import ParityCore
import ParityTensor
import UnifiedModel
import VLMMirror

// Invariants of the image prompts from pixel values: the unified model on Swift's merged
// embeddings (positions from its own get_rope_index) against the vlm mirror driven like mlx-vlm's
// generate, and each image's features alone against the same image batched with others.

extension InvariantRegistry {
    /// The image scenarios of a golden with the vision tower and a vlm mirror to embed them.
    static func imageScenarios(_ c: InvariantContext) throws -> [GoldenScenario] {
        guard c.implementations.vision != nil, c.implementations.makeVLM != nil else { return [] }
        return try c.golden.scenarios().filter { $0.kind == .image && (c.scenarios?.contains($0.name) ?? true) }
    }

    /// unified-image-vs-vlm, pixel-value prompts: mlx-vlm's stored schedule on the vlm mirror
    /// (Swift's embeddings and positions substituted) against one unified prediction that gets the
    /// merged embeddings and computes the positions from the ids and grids, as mlx-engine does.
    static func unifiedPixelPrompts(_ c: InvariantContext, _ unified: UnifiedTextModel) throws -> [Measurement] {
        guard let tower = c.implementations.vision, let makeVLM = c.implementations.makeVLM else { return [] }
        var out: [Measurement] = []
        for scenario in try imageScenarios(c) {
            guard let embedder = makeVLM() as? VLMTextModel else { continue }
            let prompt = try c.golden.imagePrompt(scenario)
            let input = try ImagePromptParity.multimodalInput(c.golden, prompt, model: embedder, tower: tower)
            guard let calls = try c.golden.schedule(scenario, path: "mlx_vlm",
                                                    substitutes: ImagePromptParity.substitutes(prompt, input)),
                  let plan = GenerateStylePlan(calls) else {
                throw GoldenError.invalid(file: c.golden.path, path: "/scenarios/\(scenario.name)/mlx_vlm schedule_json",
                                          reason: "not a generate-style image schedule")
            }
            let vlm = try ScheduleRunner.run(makeVLM(), .calls(calls))
            let own = UnifiedPrompt(input: plan.prompt.input, positions: .images(tokens: prompt.ids, imageGrid: prompt.imageGrid))
            let ours = try runUnified(unified, own, calls: plan.promptCalls, decode: plan.decode)
            out += exactPairs("\(scenario.name) calls \(plan.promptCalls) + \(plan.decode.count) decodes", ours, vlm, caches: false)
        }
        return out
    }

    /// vision-image-alone-vs-batched: every image of a multi-image prompt through the tower on
    /// its own, against its rows of the prompt's one tower call (attention never crosses images).
    static func visionAloneVersusBatched(_ c: InvariantContext) throws -> [Measurement] {
        guard let tower = c.implementations.vision else { return [] }
        var out: [Measurement] = []
        for scenario in try c.golden.scenarios() where scenario.kind == .image && (c.scenarios?.contains(scenario.name) ?? true) {
            let prompt = try c.golden.imagePrompt(scenario)
            let grids = try tower.grids(prompt.imageGrid)
            guard grids.count > 1 else { continue }
            let batched = try tower(pixelValues: prompt.pixelValues, grids: grids)
            var patchStart = 0, tokenStart = 0
            for (i, grid) in grids.enumerated() {
                let alone = try tower(pixelValues: prompt.pixelValues.slice(axis: 0, start: patchStart, length: grid.patches),
                                      grids: [grid])
                let rows = batched.slice(axis: 0, start: tokenStart, length: alone.shape[0])
                out.append(Measurement(label: "\(scenario.name) image \(i) grid \([grid.frames, grid.height, grid.width])",
                                       difference: .measure(alone, rows)))
                patchStart += grid.patches
                tokenStart += alone.shape[0]
            }
        }
        return out
    }
}
