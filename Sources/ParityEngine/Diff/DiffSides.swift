import Foundation
import LMMirror
import UnifiedModel
import VLMMirror
import ParityCore
import ParityTensor

// The sides `qwen-parity diff` compares: a golden's stored results for one reference path, or a
// Swift implementation run on the golden's inputs. A new side is one entry in
// `DiffSides.registered` (the vlm mirror: `golden-vlm` reads path "mlx_vlm", `vlm` runs the
// mirror; the unified model likewise).

/// Everything one side produced for one golden scenario.
public struct DiffCapture {
    /// `[B, T, D]` each: the embeddings, then every layer's output.
    public var hidden: [Tensor] = []
    public var finalNorm: Tensor?
    /// `[B, P, V]`: the logits at `logitsPositions` (time indices).
    public var logits: Tensor?
    public var logitsPositions: [Int] = []
    /// Cache contents after the prompt: layer → "keys" | "values" | "conv_state" | "recurrent_state".
    public var cache: [Int: [String: Tensor]] = [:]
    /// Sub-step tensors: layer → sub-step name (ParityCore `SubSteps`).
    public var subSteps: [Int: [String: Tensor]] = [:]
    /// Image prompts: the vision tower's steps and the merged embeddings, in computation order.
    public var vision: [String: Tensor] = [:]
    public var visionOrder: [String] = []

    public init() {}
}

/// What to capture: a scenario of a golden, with the sub-steps of some layers.
public struct DiffRequest {
    public var golden: GoldenFile
    public var scenario: GoldenScenario
    public var subStepLayers: Set<Int>
}

public protocol DiffSide {
    /// Command-line name: "golden-lm", "lm", ...
    var id: String { get }
    /// For people: "mlx-lm golden", "lm mirror".
    var title: String { get }
    /// Sides with the same numerics do the same arithmetic operation for operation and must
    /// agree bit for bit; others are bounded by the libraries' own distance (PairBounds).
    /// "unified" follows mlx-lm on text and mlx-vlm on MRoPE and image prompts.
    var numerics: String { get }
    var isGolden: Bool { get }
    func capture(_ request: DiffRequest) throws -> DiffCapture
}

/// A reference path stored in the golden: `/scenarios/<s>/<path>` and `/probes/<s>/<path>`.
public struct GoldenSide: DiffSide {
    public let id: String
    public let title: String
    public let path: String
    public let numerics: String
    public var isGolden: Bool { true }

    public init(id: String, title: String, path: String, numerics: String) {
        self.id = id; self.title = title; self.path = path; self.numerics = numerics
    }

    public func capture(_ request: DiffRequest) throws -> DiffCapture {
        let golden = request.golden, config = golden.config
        let base = "/scenarios/\(request.scenario.name)/\(path)"
        guard golden.file.exists(base) else {
            throw GoldenError.invalid(file: golden.path, path: base,
                                      reason: "no '\(path)' results for this scenario (side \(id)); stored paths: \(request.scenario.paths.joined(separator: ", "))")
        }
        var c = DiffCapture()
        if request.scenario.kind == .image {
            let prompt = try golden.imagePrompt(request.scenario)
            let recorded = "/vision/" + prompt.name
            let order = try golden.file.stringAttribute("steps_json", of: recorded)
            guard let steps = try? JSONDecoder().decode([String].self, from: Data(order.utf8)) else {
                throw GoldenError.invalid(file: golden.path, path: recorded + " steps_json", reason: "expected a list of step names")
            }
            for step in steps { c.vision[step] = try golden.tensor(recorded + "/" + step) }
            c.vision[ImagePromptParity.mergedStep] = try golden.tensor(prompt.group + "/input_embeddings")
            c.visionOrder = steps + [ImagePromptParity.mergedStep]
        }
        // A light path (the hazards' mlx_vlm_correct twins) stores logits and positions only:
        // its layers are then "missing", not an error.
        if golden.file.exists(base + "/hidden_states") {
            let hidden = try golden.tensor(base + "/hidden_states")
            let perLayer = Array(hidden.shape.dropFirst())
            c.hidden = (0..<hidden.shape[0]).map { hidden.slice(axis: 0, start: $0, length: 1).reshaped(perLayer) }
            c.finalNorm = try golden.tensor(base + "/final_norm")
        }
        c.logits = try golden.tensor(base + "/logits")
        c.logitsPositions = try golden.ints(base + "/logits_positions", expectingRank: 1).values.map { Int($0) }
        for (i, _) in config.layerKinds.enumerated() {
            let group = base + String(format: "/cache_after/layer_%02d", i)
            guard golden.file.exists(group) else { continue }
            for name in try golden.file.children(of: group) { c.cache[i, default: [:]][name] = try golden.tensor(group + "/" + name) }
        }
        for layer in request.subStepLayers.sorted() where layer < config.layerKinds.count {
            let kind = config.layerKinds[layer]
            let group = "/probes/\(request.scenario.name)/\(path)/" + String(format: "layer_%02d_", layer) + SubSteps.shortName(kind)
            guard golden.file.exists(group) else { continue }
            var steps: [String: Tensor] = [:]
            for name in try golden.file.children(of: group) { steps[name] = try golden.tensor(group + "/" + name) }
            // gate is stored only inside q_proj (per head [query ‖ gate]); slicing it out is no arithmetic.
            if steps["gate"] == nil, let q = steps["q_proj"], q.rank == 3 {
                let (B, L, H, hd) = (q.shape[0], q.shape[1], config.numAttentionHeads, config.headDim)
                if q.shape[2] == 2 * H * hd {
                    steps["gate"] = q.reshaped([B, L, H, 2 * hd]).slice(axis: 3, start: hd, length: hd).reshaped([B, L, H * hd])
                }
            }
            c.subSteps[layer] = steps
        }
        return c
    }

    /// "probes: full_prefill layers 0 (gdn), 3 (attn)" or nil when the golden has none for this path.
    public func probeSummary(_ golden: GoldenFile) -> String? {
        guard golden.file.exists("/probes") else { return nil }
        var parts: [String] = []
        for scenario in (try? golden.file.children(of: "/probes")) ?? [] {
            let group = "/probes/\(scenario)/\(path)"
            guard golden.file.isGroup(group) else { continue }
            let layers = ((try? golden.file.children(of: group)) ?? []).map { name -> String in
                let fields = name.split(separator: "_")   // layer_03_attn
                return fields.count == 3 ? "\(Int(fields[1]) ?? 0) (\(fields[2]))" : name
            }
            parts.append("\(scenario), layers \(layers.joined(separator: ", "))")
        }
        return parts.isEmpty ? nil : "probes: " + parts.joined(separator: "; ")
    }
}

/// A Swift implementation run on the golden's inputs with the scenario's call schedule.
public struct ImplementationSide: DiffSide {
    public let id: String
    public let title: String
    public let numerics: String
    public let model: QwenLanguageModel
    /// The reference path whose call schedule this side replays (mlx-vlm paths carry their own).
    public let schedulePath: String
    /// The vision tower that embeds image prompts (vlm mirror sides of goldens with /vision).
    public let tower: VisionTower?
    public var isGolden: Bool { false }

    public init(id: String, title: String, numerics: String, model: QwenLanguageModel, schedulePath: String = "mlx_lm",
                tower: VisionTower? = nil) {
        self.id = id; self.title = title; self.numerics = numerics; self.model = model; self.schedulePath = schedulePath
        self.tower = tower
    }

    public func capture(_ request: DiffRequest) throws -> DiffCapture {
        var c = DiffCapture()
        var substitutes = ScheduleSubstitutes()
        if request.scenario.kind == .image {
            // The side embeds the prompt itself, then runs the language calls on its own result.
            guard let tower, let (vlm, _) = FaultedModel.vlmMirror(model, tracing: nil) else {
                throw GoldenError.invalid(file: request.golden.path, path: "/scenarios/\(request.scenario.name)",
                                          reason: "an image prompt needs the vlm mirror side and the golden's /vision tower (side \(id))")
            }
            let prompt = try request.golden.imagePrompt(request.scenario)
            var order: [String] = []
            let input = try ImagePromptParity.multimodalInput(request.golden, prompt, model: vlm, tower: tower) { step, value in
                c.vision[step] = value
                order.append(step)
            }
            c.vision[ImagePromptParity.mergedStep] = input.embeddings
            c.visionOrder = order + [ImagePromptParity.mergedStep]
            substitutes = ImagePromptParity.substitutes(prompt, input)
        }
        let input = try GoldenParity.scheduleInput(request.golden, request.scenario,
                                                   path: request.scenario.paths.contains(schedulePath) ? schedulePath : "mlx_lm",
                                                   substitutes: substitutes)
        let recorder = TraceRecorder(subStepLayers: request.subStepLayers)
        let result = try ScheduleRunner.run(model, input, trace: recorder)
        let perLayer = Array(result.hiddenStates.shape.dropFirst())
        c.hidden = (0..<result.hiddenStates.shape[0]).map {
            result.hiddenStates.slice(axis: 0, start: $0, length: 1).reshaped(perLayer)
        }
        c.finalNorm = result.finalNorm
        c.logits = result.logits
        c.logitsPositions = Array(0..<result.logits.shape[1])
        for (i, layer) in (result.cacheAfterPrompt ?? []).enumerated() {
            switch layer {
            case .attention(let a):
                if let k = a.keys, let v = a.values { c.cache[i] = ["keys": k, "values": v] }
            case .deltaNet(let d):
                if let conv = d.convState, let state = d.recurrentState { c.cache[i] = ["conv_state": conv, "recurrent_state": state] }
            }
        }
        let kinds = model.config.layerKinds
        for layer in request.subStepLayers.sorted() where layer < kinds.count {
            var steps: [String: Tensor] = [:]
            for step in SubSteps.catalogue(for: kinds[layer], isMoE: model.config.isMoE) {
                guard let parts = recorder.records[.subStep(layer: layer, name: step.name)], let only = parts.first else { continue }
                if parts.count == 1 {
                    steps[step.name] = only
                } else if let axis = step.timeAxis {
                    steps[step.name] = Tensor.concatenate(parts, axis: axis)
                } else {   // a state: one per call, stacked [calls, …]
                    steps[step.name] = Tensor.concatenate(parts.map { $0.reshaped([1] + $0.shape) }, axis: 0)
                }
            }
            c.subSteps[layer] = steps
        }
        return c
    }
}

/// The sides `qwen-parity diff` knows by name.
public enum DiffSides {
    public struct Entry: Sendable {
        public let id: String
        public let summary: String
        let make: @Sendable (GoldenFile, () throws -> GoldenFile.ModelSources) throws -> DiffSide
    }

    public static let registered: [Entry] = [
        Entry(id: "golden-lm", summary: "mlx-lm's results stored in the golden, path mlx_lm") { _, _ in
            GoldenSide(id: "golden-lm", title: "mlx-lm golden", path: "mlx_lm", numerics: "mlx-lm")
        },
        Entry(id: "lm", summary: "the Swift mirror of mlx-lm, LMMirror") { golden, weights in
            ImplementationSide(id: "lm", title: "lm mirror", numerics: "mlx-lm",
                               model: LMTextModel(config: golden.config, weights: try weights().weights))
        },
        Entry(id: "golden-vlm", summary: "mlx-vlm's results stored in the golden, path mlx_vlm") { _, _ in
            GoldenSide(id: "golden-vlm", title: "mlx-vlm golden", path: "mlx_vlm", numerics: "mlx-vlm")
        },
        Entry(id: "vlm", summary: "the Swift mirror of mlx-vlm's language model, VLMMirror") { golden, weights in
            try vlmMirror(id: "vlm", title: "vlm mirror", replaying: "mlx_vlm", golden, weights)
        },
        Entry(id: "golden-vlm-correct", summary: "hazard scenarios: mlx-vlm's results for the same calls made the right way, path mlx_vlm_correct") { _, _ in
            GoldenSide(id: "golden-vlm-correct", title: "mlx-vlm golden (correct calls)", path: "mlx_vlm_correct", numerics: "mlx-vlm")
        },
        Entry(id: "vlm-correct", summary: "the vlm mirror replaying path mlx_vlm_correct's calls (hazard scenarios)") { golden, weights in
            try vlmMirror(id: "vlm-correct", title: "vlm mirror (correct calls)", replaying: "mlx_vlm_correct", golden, weights)
        },
        Entry(id: OracleSide.id, summary: "the float64 oracle stored in the golden: transformers on torch CPU, path transformers_f64 "
              + "(sub-steps where it stores probes); as the third side it is the arbiter: every side that departs from it "
              + "beyond its library's own distance from it is named") { _, _ in
            OracleSide.make()
        },
        Entry(id: "unified", summary: "the unified (patched) model: text through the lm route, MRoPE through the vlm route") { golden, weights in
            let vlm = try golden.vlmConfig()
            return ImplementationSide(id: "unified", title: "unified model", numerics: "unified",
                                      model: try UnifiedTextModel(config: golden.config, vlmConfig: vlm?.text ?? golden.config,
                                                                  multimodal: vlm?.multimodal ?? .libraryDefault, weights: try weights().weights))
        },
    ]

    /// The vlm mirror over the golden's weights, replaying the calls of reference path `path`.
    static func vlmMirror(id: String, title: String, replaying path: String, _ golden: GoldenFile,
                          _ weights: () throws -> GoldenFile.ModelSources) throws -> DiffSide {
        guard let vlm = try golden.vlmConfig() else {
            throw GoldenError.invalid(file: golden.path, path: "/config vlm_json", reason: "this golden was written without mlx-vlm")
        }
        let sources = try weights()
        return ImplementationSide(id: id, title: title, numerics: "mlx-vlm",
                                  model: VLMTextModel(config: vlm.text, multimodal: vlm.multimodal, weights: sources.weights),
                                  schedulePath: path, tower: sources.vision)
    }

    public static var names: [String] { registered.map(\.id) }

    /// A registered side, or `candidate:<name>`: a candidate stored in the golden (CandidateSide).
    public static func recognises(_ id: String) -> Bool {
        names.contains(id) || (id.hasPrefix(GoldenCandidate.pathPrefix) && id.count > GoldenCandidate.pathPrefix.count)
    }

    /// The side named `id` for `golden` over the weights of `loader` and the golden's /vision tower.
    public static func make(_ id: String, golden: GoldenFile, weights loader: () throws -> Weights) throws -> DiffSide {
        try make(id, golden: golden, sources: { GoldenFile.ModelSources(weights: try loader(), vision: try golden.visionTower()) })
    }

    /// The side named `id` for `golden`; sources are read at most once per call of `loader`.
    public static func make(_ id: String, golden: GoldenFile, sources loader: () throws -> GoldenFile.ModelSources) throws -> DiffSide {
        if id.hasPrefix(GoldenCandidate.pathPrefix) {
            return try CandidateSide(golden: golden, name: String(id.dropFirst(GoldenCandidate.pathPrefix.count)))
        }
        guard let entry = registered.first(where: { $0.id == id }) else {
            throw DiffError.unknownSide(id, known: names)
        }
        return try entry.make(golden, loader)
    }
}

public enum DiffError: Error, CustomStringConvertible, Equatable {
    case unknownSide(String, known: [String])
    case badFault(String)
    case badLayer(Int, layers: Int)
    case unknownSubStep(layer: Int, kind: String, name: String, known: [String])
    case cannotFault(String)

    public var description: String {
        switch self {
        case let .unknownSide(id, known): return "unknown side '\(id)'; known: \(known.joined(separator: ", "))"
        case let .badFault(text):
            return "bad fault '\(text)': expected LAYER:SUBSTEP, e.g. 2:conv_out (sub-steps: GatedDeltaNet \(SubSteps.deltaNet.map(\.name).joined(separator: ", ")); attention \(SubSteps.attention.map(\.name).joined(separator: ", ")); then dense \(SubSteps.denseFeedForward.map(\.name).joined(separator: ", ")) or MoE \(SubSteps.moeFeedForward.map(\.name).joined(separator: ", ")))"
        case let .badLayer(layer, layers): return "layer \(layer) does not exist (the model has layers 0..<\(layers))"
        case let .unknownSubStep(layer, kind, name, known):
            return "layer \(layer) is \(kind) and has no sub-step '\(name)'; its sub-steps: \(known.joined(separator: ", "))"
        case let .cannotFault(id): return "side '\(id)' is stored results, not an implementation: it cannot be faulted"
        }
    }
}

// MARK: - Deliberate faults

/// One sub-step of one layer to nudge: "2:conv_out".
public struct SubStepFault: Sendable, Hashable, CustomStringConvertible {
    public var layer: Int
    public var name: String

    public init(layer: Int, name: String) { self.layer = layer; self.name = name }

    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let layer = Int(parts[0]), layer >= 0, !parts[1].isEmpty else { throw DiffError.badFault(text) }
        self.init(layer: layer, name: parts[1])
    }

    public var description: String { "\(layer):\(name)" }

    /// Throws unless `config`'s layer exists and has a sub-step of that name.
    public func validate(for config: TextConfig) throws {
        guard layer < config.layerKinds.count else { throw DiffError.badLayer(layer, layers: config.layerKinds.count) }
        let kind = config.layerKinds[layer], steps = SubSteps.catalogue(for: kind, isMoE: config.isMoE).map(\.name)
        guard steps.contains(name) else {
            throw DiffError.unknownSubStep(layer: layer, kind: kind == .linearAttention ? "GatedDeltaNet" : "attention",
                                           name: name, known: steps)
        }
    }

    /// The nudge: one element moves by 5 % of its magnitude (at least 1e-3), far past any
    /// tolerance, in every call. The element sits past the middle at an offset that lands on a
    /// later token in every layout: a nudge at token 0 of the queries would change nothing, as
    /// the first query attends to one key only.
    /// Bookkeeping sub-steps hold whole numbers (key intervals, offsets, positions, expert
    /// indices, mask bits): there the element moves by one, as an off-by-one bug would (a mask
    /// bit flips).
    public func apply(to tensor: Tensor) -> Tensor {
        guard tensor.count > 0 else { return tensor }
        var t = tensor
        let i = min(t.count / 2 + t.count / 7, t.count - 1)
        if SubSteps.wholeNumbered.contains(name) {
            t.data[i] = name == "ssm_mask" ? 1 - t.data[i] : t.data[i] + 1
        } else {
            t.data[i] += max(1e-3, 0.05 * abs(t.data[i]))
        }
        return t
    }
}

/// An implementation with one sub-step nudged in every call: a deliberately faulted copy to
/// check that `diff` and the vote blame the right layer, sub-step and side.
public final class FaultedModel: QwenLanguageModel {
    public let inner: QwenLanguageModel
    public let fault: SubStepFault

    public init(_ inner: QwenLanguageModel, fault: SubStepFault) {
        self.inner = inner
        self.fault = fault
    }

    public var config: TextConfig { inner.config }

    public func makeCache(leftPadding: [Int]?) -> PromptCache { inner.makeCache(leftPadding: leftPadding) }

    public func forward(_ input: ModelInput, positionIds: PositionIDs?, cache: PromptCache?, trace: TraceSink?) throws -> Tensor {
        try inner.forward(input, positionIds: positionIds, cache: cache, trace: FaultInjector(fault: fault, forwardingTo: trace))
    }
}

extension FaultedModel {
    /// The vlm mirror behind `model` (itself, or the one a fault wraps) and the sink its calls
    /// trace into, so explicit LanguageModel calls run faulted too.
    static func vlmMirror(_ model: QwenLanguageModel, tracing sink: TraceSink?) -> (VLMTextModel, TraceSink?)? {
        if let vlm = model as? VLMTextModel { return (vlm, sink) }
        if let faulted = model as? FaultedModel, let vlm = faulted.inner as? VLMTextModel {
            return (vlm, FaultInjector(fault: faulted.fault, forwardingTo: sink))
        }
        return nil
    }
}

/// Traces the faulted layer (so its taps run), rewrites the faulted sub-step, and passes on to
/// the wrapped sink exactly what it asked for.
final class FaultInjector: SubStepRewriter {
    let fault: SubStepFault
    let inner: TraceSink?

    init(fault: SubStepFault, forwardingTo inner: TraceSink?) {
        self.fault = fault
        self.inner = inner
    }

    func wantsSubSteps(layer: Int) -> Bool { layer == fault.layer || inner?.wantsSubSteps(layer: layer) == true }

    func record(_ key: TraceKey, _ tensor: Tensor) {
        if case .subStep(let layer, _) = key, inner?.wantsSubSteps(layer: layer) != true { return }
        inner?.record(key, tensor)
    }

    func rewrite(_ key: TraceKey, _ tensor: Tensor) -> Tensor? {
        key == .subStep(layer: fault.layer, name: fault.name) ? fault.apply(to: tensor) : nil
    }
}

extension ImplementationSide {
    /// This side with `fault` injected: id "lm+2:conv_out", title "lm mirror, fault 2:conv_out".
    public func faulted(_ fault: SubStepFault) -> ImplementationSide {
        ImplementationSide(id: "\(id)+\(fault)", title: "\(title) with fault \(fault)", numerics: numerics,
                           model: FaultedModel(model, fault: fault), schedulePath: schedulePath, tower: tower)
    }
}
