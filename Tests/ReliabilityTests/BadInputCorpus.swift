import Foundation
import GoldenIO

// Derives bad inputs from the real goldens: truncated copies, flipped bits, edited copies
// (missing, mistyped, misshapen, non-finite or out-of-range datasets and attributes, broken
// configs and schedules), and a few things that are not golden files at all. Nothing here is
// committed as a file: every case is rebuilt from golden/*.h5 on each run, from a fixed seed.

struct BadInput: Sendable {
    enum Expectation: Sendable {
        /// A one-line error naming the file and every string in the list.
        case namedError([String])
        /// A flipped bit. Either a named error, or a reported parity failure, or (when the bit sits
        /// where nothing the harness reads changes) exactly the clean file's output.
        case flipped
    }

    var id: String
    var golden: URL
    /// Passed as `--scenario`, to bound the run time of cases that need a forward pass.
    var scenario: String?
    var expectation: Expectation
    /// Creates the case at `path` (nothing exists there yet).
    var build: @Sendable (_ path: String) throws -> Void
    /// `check` runs on the folder holding `path` (a model directory), not on the file.
    var checksDirectory = false
    var arguments: [String] = []
}

/// What the corpus generator learns from a pristine golden (read in-process; only pristine
/// files are ever opened here, never a corrupted one).
struct GoldenFacts: Sendable {
    var url: URL
    var name: String
    var size: Int
    var weights: [String]
    var vocabSize: Int
    var rawJSON: String
    var effectiveJSON: String
    var dataRanges: [Range<Int>]
    /// Datasets the no_cache scenario reads: weights and its reference tensors.
    var noCacheDatasets: [(path: String, range: Range<Int>)]
    var attentionLayer: Int
    var deltaNetLayer: Int
    /// The vision tower's weights (empty for a golden without image prompts).
    var visionWeights: [String]
    /// Whether the golden holds mlx-vlm paths (/config vlm_json).
    var hasVLM: Bool

    init(_ url: URL) throws {
        self.url = url
        name = url.deletingPathExtension().lastPathComponent
        size = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as! Int
        let file = try H5File.open(url.path)
        defer { file.close() }
        weights = try file.children(of: "/weights")
        visionWeights = file.exists("/vision/weights") ? try file.children(of: "/vision/weights") : []
        hasVLM = file.hasAttribute("vlm_json", of: "/config")
        rawJSON = try file.stringAttribute("raw_json", of: "/config")
        effectiveJSON = try file.stringAttribute("effective_json", of: "/config")
        let effective = try JSONSerialization.jsonObject(with: Data(effectiveJSON.utf8)) as! [String: Any]
        vocabSize = effective["vocab_size"] as! Int
        let kinds = effective["layer_types"] as! [String]
        attentionLayer = kinds.firstIndex(of: "full_attention")!
        deltaNetLayer = kinds.firstIndex(of: "linear_attention")!

        var ranges: [Range<Int>] = []
        var noCache: [(String, Range<Int>)] = []
        func walk(_ group: String) throws {
            for child in try file.children(of: group) {
                let path = group == "/" ? "/" + child : group + "/" + child
                if file.isGroup(path) { try walk(path); continue }
                guard let range = try file.rawDataRange(path) else { continue }
                ranges.append(range)
                if case .float(32) = try file.datasetInfo(path).kind,
                   path.hasPrefix("/weights/") || path.hasPrefix("/scenarios/no_cache/") {
                    noCache.append((path, range))
                }
            }
        }
        try walk("/")
        dataRanges = ranges.sorted { $0.lowerBound < $1.lowerBound }
        noCacheDatasets = noCache
    }

    /// Byte offsets that hold no dataset elements: superblock, object headers, B-trees, heaps.
    func metadataOffset(_ rng: inout SeededGenerator) -> Int {
        while true {
            let offset = Int.random(in: 0..<size, using: &rng)
            if !dataRanges.contains(where: { $0.contains(offset) }) { return offset }
            // Most bytes are data; jump to a random gap instead of sampling forever.
            var gaps: [Range<Int>] = []
            var cursor = 0
            for r in dataRanges {
                if r.lowerBound > cursor { gaps.append(cursor..<r.lowerBound) }
                cursor = max(cursor, r.upperBound)
            }
            if cursor < size { gaps.append(cursor..<size) }
            let total = gaps.reduce(0) { $0 + $1.count }
            var pick = Int.random(in: 0..<total, using: &rng)
            for g in gaps {
                if pick < g.count { return g.lowerBound + pick }
                pick -= g.count
            }
        }
    }
}

enum BadInputCorpus {
    // MARK: Building blocks

    static func copy(_ golden: URL, to path: String) throws {
        try FileManager.default.copyItem(atPath: golden.path, toPath: path)
    }

    /// A copy of `golden` edited through GoldenIO.
    static func edited(_ golden: URL, _ edit: @escaping @Sendable (H5File) throws -> Void) -> @Sendable (String) throws -> Void {
        { path in
            try copy(golden, to: path)
            let file = try H5File.open(path, mode: .readWrite)
            defer { file.close() }
            try edit(file)
        }
    }

    /// A copy of `golden` with its bytes transformed.
    static func bytes(_ golden: URL, _ transform: @escaping @Sendable (inout Data) -> Void) -> @Sendable (String) throws -> Void {
        { path in
            var data = try Data(contentsOf: golden)
            transform(&data)
            try data.write(to: URL(fileURLWithPath: path))
        }
    }

    /// Rewrites a dataset with other contents (the old link is removed first).
    static func replace(_ file: H5File, _ path: String, floats: [Float], shape: [Int]) throws {
        try file.deleteObject(path)
        try file.writeFloats(path, shape: shape, values: floats)
    }

    static func replace(_ file: H5File, _ path: String, ints: [Int32], shape: [Int]) throws {
        try file.deleteObject(path)
        try file.writeInt32s(path, shape: shape, values: ints)
    }

    /// Sets element `index` (wrapped to the size) of a float dataset to `value`, keeping the shape.
    static func poke(_ file: H5File, _ path: String, _ index: Int, _ value: Float) throws {
        var array = try file.readFloats(path)
        array.values[index % array.values.count] = value
        // A new dataset rather than an in-place write: goldens hard-link repeated tensors, and
        // only this path should change.
        try replace(file, path, floats: array.values, shape: array.shape)
    }

    static func pokeInt(_ file: H5File, _ path: String, _ index: Int, _ value: Int32) throws {
        var array = try file.readInt32s(path)
        array.values[index % array.values.count] = value
        try replace(file, path, ints: array.values, shape: array.shape)
    }

    /// raw_json (or effective_json) parsed, edited, and written back.
    static func editJSON(_ file: H5File, _ attribute: String, _ edit: (inout [String: Any]) -> Void) throws {
        let text = try file.stringAttribute(attribute, of: "/config")
        var object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        edit(&object)
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try file.setAttribute(attribute, string: String(decoding: data, as: UTF8.self), on: "/config")
    }

    /// raw_json with `text` spliced in for key `key` (for values JSONSerialization cannot write).
    static func rawJSONSettingKey(_ file: H5File, _ key: String, literal: String) throws {
        let text = try file.stringAttribute("raw_json", of: "/config")
        var object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        object[key] = "@@VALUE@@"
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        let spliced = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"@@VALUE@@\"", with: literal)
        try file.setAttribute("raw_json", string: spliced, on: "/config")
    }

    // MARK: The corpus

    /// Cases that are not golden files at all (built once).
    static func notGoldens(_ golden: URL) -> [BadInput] {
        func c(_ id: String, _ build: @escaping @Sendable (String) throws -> Void) -> BadInput {
            BadInput(id: "file/" + id, golden: golden, scenario: nil, expectation: .namedError([]), build: build)
        }
        return [
            c("empty") { path in FileManager.default.createFile(atPath: path, contents: Data()) },
            c("directory") { path in try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false) },
            c("missing") { _ in },
            c("text") { path in try "format_version = 1\n".write(toFile: path, atomically: false, encoding: .utf8) },
            c("json") { path in try "{\"weights\": {}}".write(toFile: path, atomically: false, encoding: .utf8) },
            c("random-bytes") { path in
                var rng = SeededGenerator(state: 99)
                try Data((0..<8192).map { _ in UInt8.random(in: 0...255, using: &rng) }).write(to: URL(fileURLWithPath: path))
            },
            c("signature-then-zeros") { path in
                try (Data([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]) + Data(count: 2048)).write(to: URL(fileURLWithPath: path))
            },
            c("signature-only") { path in
                try Data([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]).write(to: URL(fileURLWithPath: path))
            },
            c("dangling-symlink") { path in try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: path + ".nowhere") },
            c("symlink-to-directory") { path in
                try FileManager.default.createDirectory(atPath: path + ".d", withIntermediateDirectories: false)
                try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: path + ".d")
            },
        ]
    }

    /// Image prompts from pixel values (/vision, /inputs/vision): run on the two-image prompt.
    static func visionCases(_ facts: GoldenFacts, _ rng: inout SeededGenerator,
                            _ add: (String, String?, BadInput.Expectation, @escaping @Sendable (String) throws -> Void) -> Void) {
        let g = facts.url, scenario = "image_prompt_two", inputs = "/inputs/vision/image_two"
        func named(_ id: String, _ mentions: [String], _ edit: @escaping @Sendable (H5File) throws -> Void) {
            add("vision-" + id, scenario, .namedError(mentions), edited(g, edit))
        }
        let pixels = inputs + "/pixel_values", grid = inputs + "/image_grid_thw"
        for value: Float in [.nan, .infinity] {
            let index = Int.random(in: 0..<4000, using: &rng)
            named("pixels-\(value)", [pixels, "NaN or Inf"]) { try poke($0, pixels, index, value) }
        }
        named("pixels-missing", [pixels]) { try $0.deleteObject(pixels) }
        named("pixels-one-row-short", [pixels, "shape"]) { file in
            let a = try file.readFloats(pixels)
            try replace(file, pixels, floats: Array(a.values.dropLast(a.shape[1])), shape: [a.shape[0] - 1, a.shape[1]])
        }
        named("pixels-rank-1", [pixels, "shape"]) { file in
            let a = try file.readFloats(pixels)
            try replace(file, pixels, floats: a.values, shape: [a.values.count])
        }
        for (label, rows) in [("odd-height", [1, 5, 4, 1, 8, 6]), ("zero-frames", [0, 4, 4, 1, 8, 6]),
                              ("negative", [1, -4, 4, 1, 8, 6]), ("too-few-patches", [1, 2, 2, 1, 8, 6])] {
            named("grid-\(label)", [grid]) { try replace($0, grid, ints: rows.map(Int32.init), shape: [2, 3]) }
        }
        named("grid-rank-1", [grid, "rank"]) { try replace($0, grid, ints: [1, 4, 4, 1, 8, 6], shape: [6]) }
        named("grid-as-float", [grid, "float32"]) { try replace($0, grid, floats: [1, 4, 4, 1, 8, 6], shape: [2, 3]) }
        named("grid-missing", [grid]) { try $0.deleteObject(grid) }
        // One more image token than the tower has features for.
        named("image-tokens-exceed-features", [inputs, "image tokens"]) { file in
            let ids = try file.readInt32s(inputs + "/token_ids")
            var values = ids.values
            values[0] = 997
            try replace(file, inputs + "/token_ids", ints: values, shape: ids.shape)
        }
        named("prompt-length-beyond", [inputs, "prompt_length"]) { try $0.setAttribute("prompt_length", int: 999, on: inputs) }
        named("vision-inputs-dangling", ["/inputs/vision/nowhere"]) {
            try $0.setAttribute("vision_inputs", string: "/inputs/vision/nowhere", on: "/scenarios/" + scenario)
        }
        named("vision-inputs-missing", ["/scenarios/\(scenario)", "vision_inputs"]) {
            try $0.deleteAttribute("vision_inputs", of: "/scenarios/" + scenario)
        }
        var weights = facts.visionWeights.shuffled(using: &rng)
        for _ in 0..<2 {
            let w = weights.removeFirst()
            named("weight-missing-\(w)", ["/vision/weights", w]) { try $0.deleteObject("/vision/weights/" + w) }
        }
        let w = weights.removeFirst()
        named("weight-nan-\(w)", ["/vision/weights/" + w, "NaN or Inf"]) { try poke($0, "/vision/weights/" + w, 5, .nan) }
        let v = weights.removeFirst()
        named("weight-transposed-\(v)", [v, "shape"]) { file in
            let a = try file.readFloats("/vision/weights/" + v)
            try replace(file, "/vision/weights/" + v, floats: a.values, shape: a.shape.count == 1 ? [1, a.values.count] : Array(a.shape.reversed()))
        }
        named("weight-unexpected", ["/vision/weights", "vision_tower.blocks.7.attn.qkv.weight"]) {
            try $0.writeFloats("/vision/weights/vision_tower.blocks.7.attn.qkv.weight", shape: [2], values: [1, 2])
        }
        let configEdits: [(String, String, @Sendable (inout [String: Any]) -> Void)] = [
            ("no-depth", "depth", { $0.removeValue(forKey: "depth") }),
            ("heads-do-not-divide", "num_heads", { $0["num_heads"] = 5 }),
            ("deepstack", "deepstack", { $0["deepstack_visual_indexes"] = [1] }),
            ("patch-size-string", "patch_size", { $0["patch_size"] = "4" }),
            ("merge-size-3", "merger.linear_fc1", { $0["spatial_merge_size"] = 3 }),
            ("out-hidden-wrong", "merger.linear_fc2", { $0["out_hidden_size"] = 64 }),
        ]
        for (label, key, edit) in configEdits {
            named("config-\(label)", [key]) { file in
                let text = try file.stringAttribute("config_json", of: "/vision")
                var outer = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
                var config = outer["vision_config"] as! [String: Any]
                edit(&config)
                outer["vision_config"] = config
                let data = try JSONSerialization.data(withJSONObject: outer, options: [.sortedKeys])
                try file.setAttribute("config_json", string: String(decoding: data, as: UTF8.self), on: "/vision")
            }
        }
        named("config-not-json", ["/vision config_json"]) { try $0.setAttribute("config_json", string: "{oops", on: "/vision") }
        named("steps-json-missing", ["steps_json"]) { try $0.deleteAttribute("steps_json", of: "/vision/image_two") }
        named("recorded-step-nan", ["/vision/image_two/features", "NaN or Inf"]) { try poke($0, "/vision/image_two/features", 3, .nan) }
        named("merged-embeddings-misshapen", [inputs + "/input_embeddings", "shape"]) { file in
            let a = try file.readFloats(inputs + "/input_embeddings")
            try replace(file, inputs + "/input_embeddings", floats: Array(a.values.dropLast(a.shape[2])), shape: [1, a.shape[1] - 1, a.shape[2]])
        }
    }

    static func cases(_ facts: GoldenFacts, seed: UInt64) -> [BadInput] {
        var rng = SeededGenerator(state: seed)
        let g = facts.url
        var out: [BadInput] = []
        func add(_ id: String, scenario: String? = nil, _ expectation: BadInput.Expectation,
                 _ build: @escaping @Sendable (String) throws -> Void) {
            out.append(BadInput(id: "\(facts.name)/\(id)", golden: g, scenario: scenario, expectation: expectation, build: build))
        }
        func named(_ id: String, _ mentions: [String], _ edit: @escaping @Sendable (H5File) throws -> Void) {
            add(id, .namedError(mentions), edited(g, edit))
        }

        // Truncations: inside the superblock, the first object headers, the data, and the tail.
        var offsets = [1, 7, 8, 9, 24, 48, 95, 96, 97, 136, 200, 400, 512, 680, 800, 1024, 1500, 2048, 3000,
                       4096, 6000, 8192, 16384, 65536]
        let n = facts.size
        offsets += [n / 8, n / 4, n / 3, n / 2, 2 * n / 3, 3 * n / 4, n - 65536, n - 8192, n - 4096, n - 1024, n - 100, n - 8, n - 1]
        offsets += (0..<16).map { _ in Int.random(in: 1..<n, using: &rng) }
        offsets += (0..<12).map { _ in facts.metadataOffset(&rng) }
        for offset in Set(offsets).sorted() where offset > 0 && offset < n {
            add("truncated-at-\(offset)", .namedError([])) { path in
                let data = try Data(contentsOf: g)
                try data.prefix(offset).write(to: URL(fileURLWithPath: path))
            }
        }

        // Bit flips in metadata (anywhere), and in the elements of a tensor no_cache reads.
        // Few: most metadata bytes are unused B-tree and heap space, so most flips are harmless and
        // cost a full no_cache run each to prove it.
        for _ in 0..<4 {
            let offset = facts.metadataOffset(&rng)
            let bit = UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            add("flip-metadata-\(offset)-\(bit)", scenario: "no_cache", .flipped, bytes(g) { $0[offset] ^= bit })
        }
        for _ in 0..<2 {
            let (dataset, range) = facts.noCacheDatasets.randomElement(using: &rng)!
            let element = Int.random(in: 0..<(range.count / 4), using: &rng)
            let offset = range.lowerBound + 4 * element + 3   // the byte with the sign and the top exponent bits
            add("flip-exponent-\(dataset)[\(element)]", scenario: "no_cache", .flipped, bytes(g) { $0[offset] ^= 0x40 })
        }

        // Weights: missing, non-finite, misshapen, mistyped, extra.
        var weights = facts.weights.shuffled(using: &rng)
        func nextWeight() -> String { let w = weights.removeFirst(); weights.append(w); return w }
        for _ in 0..<4 {
            let w = nextWeight()
            named("weight-missing-\(w)", [w]) { try $0.deleteObject("/weights/" + w) }
        }
        for value: Float in [.nan, .infinity, -.infinity, .nan, .signalingNaN] {
            let w = nextWeight(), index = Int.random(in: 0..<1_000_000, using: &rng)
            named("weight-\(value)-\(w)", ["/weights/" + w, "NaN or Inf"]) { try poke($0, "/weights/" + w, index, value) }
        }
        for _ in 0..<3 {
            let w = nextWeight()
            named("weight-flattened-\(w)", [w, "shape"]) { file in
                let a = try file.readFloats("/weights/" + w)
                try replace(file, "/weights/" + w, floats: a.values, shape: a.shape.count == 1 ? [a.values.count, 1] : [a.values.count])
            }
        }
        do {
            let w = nextWeight()
            named("weight-extra-row-\(w)", [w, "shape"]) { file in
                let a = try file.readFloats("/weights/" + w)
                var shape = a.shape
                shape[0] += 1
                try replace(file, "/weights/" + w, floats: a.values + [Float](repeating: 0.5, count: a.values.count / a.shape[0]), shape: shape)
            }
        }
        for _ in 0..<2 {
            let w = nextWeight()
            named("weight-as-strings-\(w)", ["/weights/" + w, "string"]) { file in
                try file.deleteObject("/weights/" + w)
                try file.writeStrings("/weights/" + w, shape: [2], values: ["not", "numbers"])
            }
        }
        do {
            let w = nextWeight()
            named("weight-is-a-group-\(w)", ["/weights/" + w, "group"]) { file in
                try file.deleteObject("/weights/" + w)
                try file.writeFloats("/weights/" + w + "/inner", shape: [1], values: [1])
            }
        }
        named("weight-unexpected", ["layers.99.bogus.weight"]) {
            try $0.writeFloats("/weights/language_model.model.layers.99.bogus.weight", shape: [2], values: [1, 2])
        }
        named("weights-group-missing", ["/weights"]) { try $0.deleteObject("/weights") }
        named("weights-group-empty", ["weight"]) { file in
            for w in try file.children(of: "/weights") { try file.deleteObject("/weights/" + w) }
        }

        // Inputs.
        let V = Int32(facts.vocabSize)
        for dataset in ["/inputs/token_ids", "/inputs/batch/token_ids", "/inputs/batch/left_padding", "/inputs/batch/decode_tokens"] {
            named("input-missing-\(dataset)", [dataset]) { try $0.deleteObject(dataset) }
        }
        named("inputs-group-missing", ["/inputs"]) { try $0.deleteObject("/inputs") }
        for (dataset, value) in [("/inputs/token_ids", Int32(-1)), ("/inputs/token_ids", V), ("/inputs/token_ids", .max),
                                 ("/inputs/token_ids", .min), ("/inputs/batch/token_ids", -5), ("/inputs/batch/token_ids", V),
                                 ("/inputs/batch/decode_tokens", V), ("/inputs/batch/decode_tokens", -1)] {
            let index = Int.random(in: 0..<1000, using: &rng)
            named("token-\(value)-in-\(dataset)", [dataset, "\(value)", "vocabulary"]) { try pokeInt($0, dataset, index, value) }
        }
        for (label, value) in [("nan", Float.nan), ("inf", .infinity), ("fraction", 3.5)] {
            named("token-ids-as-float-\(label)", ["/inputs/token_ids", "float32"]) { file in
                let a = try file.readInt32s("/inputs/token_ids")
                var values = a.values.map(Float.init)
                values[1] = value
                try replace(file, "/inputs/token_ids", floats: values, shape: a.shape)
            }
        }
        named("token-ids-int64-beyond-int32", ["/inputs/token_ids", "int32"]) { file in
            let a = try file.readInt32s("/inputs/token_ids")
            var values = a.values.map(Int64.init)
            values[0] = 1 << 40
            try file.deleteObject("/inputs/token_ids")
            try file.writeInt64s("/inputs/token_ids", shape: a.shape, values: values)
        }
        named("token-ids-as-strings", ["/inputs/token_ids", "string"]) { file in
            try file.deleteObject("/inputs/token_ids")
            try file.writeStrings("/inputs/token_ids", shape: [1], values: ["hello"])
        }
        named("token-ids-rank-1", ["/inputs/token_ids", "rank"]) { file in
            let a = try file.readInt32s("/inputs/token_ids")
            try replace(file, "/inputs/token_ids", ints: a.values, shape: [a.values.count])
        }
        named("token-ids-empty-row", ["/inputs/token_ids"]) { try replace($0, "/inputs/token_ids", ints: [], shape: [1, 0]) }
        named("token-ids-two-rows", ["/inputs/token_ids", "row"]) { file in
            let a = try file.readInt32s("/inputs/token_ids")
            try replace(file, "/inputs/token_ids", ints: a.values + a.values, shape: [2, a.values.count])
        }
        named("token-ids-short", ["calls_json", "/inputs/token_ids"]) { file in
            let a = try file.readInt32s("/inputs/token_ids")
            try replace(file, "/inputs/token_ids", ints: Array(a.values.dropLast()), shape: [1, a.values.count - 1])
        }
        let paddingEdits: [(String, @Sendable ([Int32], Int32) -> [Int32])] = [
            ("row-length", { p, L in [L] + p.dropFirst() }),
            ("beyond-row", { p, L in p.dropLast() + [L + 7] }),
            ("negative", { p, _ in [-1] + p.dropFirst() }),
            ("one-short", { p, _ in Array(p.dropLast()) }),
            ("one-extra", { p, _ in p + [0] }),
        ]
        for (label, edit) in paddingEdits {
            named("left-padding-\(label)", ["/inputs/batch/left_padding"]) { file in
                let p = try file.readInt32s("/inputs/batch/left_padding").values
                let L = Int32(try file.readInt32s("/inputs/batch/token_ids").shape[1])
                let edited = edit(p, L)
                try replace(file, "/inputs/batch/left_padding", ints: edited, shape: [edited.count])
            }
        }
        named("left-padding-as-float", ["/inputs/batch/left_padding", "float32"]) { file in
            let p = try file.readInt32s("/inputs/batch/left_padding").values
            try replace(file, "/inputs/batch/left_padding", floats: p.map(Float.init), shape: [p.count])
        }
        named("decode-tokens-wrong-width", ["/inputs/batch/decode_tokens"]) { file in
            let a = try file.readInt32s("/inputs/batch/decode_tokens")
            try replace(file, "/inputs/batch/decode_tokens", ints: Array(a.values.prefix(a.shape[0] * 2)), shape: [a.shape[0], 2])
        }

        // Stored reference tensors and scenario attributes.
        let A = String(format: "layer_%02d", facts.attentionLayer), G = String(format: "layer_%02d", facts.deltaNetLayer)
        let tensors = ["no_cache/mlx_lm/hidden_states", "no_cache/mlx_lm/final_norm", "no_cache/mlx_lm/logits",
                       "full_prefill/mlx_lm/logits", "prefix_decode/mlx_lm/hidden_states", "batch_left_pad/mlx_lm/logits",
                       "batch_left_pad/mlx_lm/final_norm", "chunked_prefill_5/mlx_lm/logits",
                       "full_prefill/mlx_lm/cache_after/\(A)/keys", "token_by_token/mlx_lm/cache_after/\(A)/values",
                       "full_prefill/mlx_lm/cache_after/\(G)/conv_state", "batch_left_pad/mlx_lm/cache_after/\(G)/recurrent_state"]
        for (i, t) in tensors.enumerated() {
            let dataset = "/scenarios/" + t
            named("reference-missing-\(t)", [dataset]) { try $0.deleteObject(dataset) }
            let value: Float = [.nan, .infinity, -.infinity][i % 3]
            let index = Int.random(in: 0..<100_000, using: &rng)
            named("reference-\(value)-\(t)", [dataset, "NaN or Inf"]) { try poke($0, dataset, index, value) }
        }
        for t in ["no_cache/mlx_lm/logits", "batch_left_pad/mlx_lm/hidden_states", "full_prefill/mlx_lm/cache_after/\(A)/keys",
                  "chunked_prefill_16/mlx_lm/cache_after/\(G)/recurrent_state"] {
            let dataset = "/scenarios/" + t
            named("reference-shape-\(t)", [dataset, "shape"]) { file in
                let a = try file.readFloats(dataset)
                var shape = a.shape
                shape[shape.count - 1] -= 1
                try replace(file, dataset, floats: Array(a.values.prefix(shape.reduce(1, *))), shape: shape)
            }
        }
        named("reference-as-strings", ["/scenarios/full_prefill/mlx_lm/final_norm", "string"]) { file in
            try file.deleteObject("/scenarios/full_prefill/mlx_lm/final_norm")
            try file.writeStrings("/scenarios/full_prefill/mlx_lm/final_norm", shape: [1], values: ["x"])
        }
        named("logits-positions-beyond", ["/scenarios/prefix_decode/mlx_lm/logits_positions"]) {
            try pokeInt($0, "/scenarios/prefix_decode/mlx_lm/logits_positions", 0, 999)
        }
        named("logits-positions-negative", ["/scenarios/no_cache/mlx_lm/logits_positions"]) {
            try pokeInt($0, "/scenarios/no_cache/mlx_lm/logits_positions", 3, -1)
        }
        named("logits-positions-as-float", ["/scenarios/no_cache/mlx_lm/logits_positions", "float32"]) { file in
            let p = try file.readInt32s("/scenarios/no_cache/mlx_lm/logits_positions").values
            try replace(file, "/scenarios/no_cache/mlx_lm/logits_positions", floats: p.map(Float.init), shape: [p.count])
        }
        named("logits-positions-missing", ["/scenarios/chunked_prefill_16/mlx_lm/logits_positions"]) {
            try $0.deleteObject("/scenarios/chunked_prefill_16/mlx_lm/logits_positions")
        }
        named("cache-after-missing", ["/scenarios/prefix_decode/mlx_lm/cache_after"]) {
            try $0.deleteObject("/scenarios/prefix_decode/mlx_lm/cache_after")
        }
        named("cache-layer-missing", ["/scenarios/full_prefill/mlx_lm/cache_after/\(A)"]) {
            try $0.deleteObject("/scenarios/full_prefill/mlx_lm/cache_after/\(A)")
        }
        named("reference-paths-missing", ["/scenarios/no_cache", "reference"]) { file in
            for path in try file.children(of: "/scenarios/no_cache") { try file.deleteObject("/scenarios/no_cache/" + path) }
        }
        named("scenarios-group-missing", ["/scenarios"]) { try $0.deleteObject("/scenarios") }
        named("scenarios-group-empty", ["/scenarios"]) { file in
            for s in try file.children(of: "/scenarios") { try file.deleteObject("/scenarios/" + s) }
        }
        for (scenario, attribute) in [("no_cache", "kind"), ("full_prefill", "calls_json"), ("batch_left_pad", "cached"),
                                      ("token_by_token", "calls_json")] {
            named("scenario-attribute-missing-\(scenario)-\(attribute)", ["/scenarios/\(scenario)", attribute]) {
                try $0.deleteAttribute(attribute, of: "/scenarios/" + scenario)
            }
        }
        named("scenario-kind-unknown", ["/scenarios/full_prefill", "kind"]) {
            try $0.setAttribute("kind", string: "double", on: "/scenarios/full_prefill")
        }
        named("scenario-cached-string", ["/scenarios/no_cache", "cached"]) {
            try $0.setAttribute("cached", string: "no", on: "/scenarios/no_cache")
        }
        for (scenario, calls) in [("full_prefill", "[-1, 33]"), ("full_prefill", "[0, 32]"), ("chunked_prefill_16", "[16, 15]"),
                                  ("chunked_prefill_16", "[16, 15, 2]"), ("prefix_decode", "[]"), ("prefix_decode", "oops"),
                                  ("token_by_token", "[1.5, 30.5]"), ("token_by_token", "[9223372036854775807, 1]"),
                                  ("full_prefill", "[\"32\"]"), ("no_cache", "[16, 16]"), ("full_prefill", "null"),
                                  ("batch_left_pad", "[32, 1, 1]"), ("batch_left_pad", "[35]"), ("chunked_prefill_5", "{\"calls\": [32]}")] {
            named("calls-json-\(scenario)-\(calls)", ["/scenarios/\(scenario)", "calls_json"]) {
                try $0.setAttribute("calls_json", string: calls, on: "/scenarios/" + scenario)
            }
        }

        // Root attributes and the config.
        named("format-version-missing", ["format_version"]) { try $0.deleteAttribute("format_version", of: "/") }
        for version in [2, 0, -1, 1 << 40] {
            named("format-version-\(version)", ["format_version", "\(version)"]) { try $0.setAttribute("format_version", int: version, on: "/") }
        }
        named("format-version-string", ["format_version"]) { try $0.setAttribute("format_version", string: "1", on: "/") }
        named("format-version-fraction", ["format_version"]) { try $0.setAttribute("format_version", double: 1.5, on: "/") }
        named("config-group-missing", ["/config"]) { try $0.deleteObject("/config") }
        for attribute in ["raw_json", "effective_json"] {
            named("config-\(attribute)-missing", [attribute]) { try $0.deleteAttribute(attribute, of: "/config") }
            for (label, text) in [("not-json", "{oops"), ("empty", ""), ("array", "[]"), ("null", "null"), ("number", "42")] {
                named("config-\(attribute)-\(label)", [attribute]) { try $0.setAttribute(attribute, string: text, on: "/config") }
            }
        }
        named("config-raw-json-int", ["raw_json"]) { try $0.setAttribute("raw_json", int: 7, on: "/config") }
        let inconsistent: [(String, String, @Sendable (inout [String: Any]) -> Void)] = [
            ("kv-heads-do-not-divide", "num_key_value_heads", { $0["num_key_value_heads"] = 3 }),
            ("heads-do-not-divide", "num_attention_heads", { $0["num_attention_heads"] = 6 }),
            ("value-heads-not-multiple", "linear_num_value_heads", { $0["linear_num_value_heads"] = 6 }),
            ("key-heads-not-dividing", "linear_num_value_heads", { $0["linear_num_key_heads"] = 3 }),
            ("hidden-negative", "hidden_size", { $0["hidden_size"] = -128 }),
            ("vocab-zero", "vocab_size", { $0["vocab_size"] = 0 }),
            ("layers-huge", "num_hidden_layers", { $0["num_hidden_layers"] = 1_000_000_000 }),
            ("kernel-zero", "linear_conv_kernel_dim", { $0["linear_conv_kernel_dim"] = 0 }),
            ("interval-zero", "full_attention_interval", { $0["full_attention_interval"] = 0 }),
            ("eps-negative", "rms_norm_eps", { $0["rms_norm_eps"] = -1e-5 }),
            ("rope-type-yarn", "rope_parameters.type", { $0["rope_parameters"] = ["type": "yarn"] }),
            ("rope-factor-huge", "partial_rotary_factor", { $0["rope_parameters"] = ["partial_rotary_factor": 1e300] }),
            ("rope-factor-odd-dims", "partial_rotary_factor", { $0["rope_parameters"] = ["partial_rotary_factor": 0.3] }),
            ("rope-theta-zero", "rope_theta", { $0["rope_parameters"] = ["rope_theta": 0, "partial_rotary_factor": 0.25] }),
            ("model-type-llama", "model_type", { $0["model_type"] = "llama" }),
            ("hidden-size-string", "hidden_size", { $0["hidden_size"] = "128" }),
            ("tie-string", "tie_word_embeddings", { $0["tie_word_embeddings"] = "yes" }),
            ("layers-array", "num_hidden_layers", { $0["num_hidden_layers"] = [4] }),
            ("eps-string", "rms_norm_eps", { $0["rms_norm_eps"] = "small" }),
            ("rope-parameters-string", "rope_parameters", { $0["rope_parameters"] = "default" }),
            ("vocab-null", "vocab_size", { $0["vocab_size"] = NSNull() }),
            ("experts-more-per-token", "num_experts_per_tok", { $0["model_type"] = "qwen3_5_moe"; $0["num_experts"] = 2; $0["num_experts_per_tok"] = 3; $0["moe_intermediate_size"] = 8; $0["shared_expert_intermediate_size"] = 8 }),
        ]
        for (label, key, edit) in inconsistent {
            named("raw-json-\(label)", ["/config raw_json", key]) { try editJSON($0, "raw_json", edit) }
        }
        for key in ["model_type", "hidden_size", "num_hidden_layers", "vocab_size", "head_dim", "linear_key_head_dim",
                    "linear_value_head_dim", "linear_conv_kernel_dim", "intermediate_size", "rms_norm_eps", "num_key_value_heads"] {
            named("raw-json-without-\(key)", [key]) { try editJSON($0, "raw_json") { $0.removeValue(forKey: key) } }
        }
        for (key, literal) in [("num_hidden_layers", "4.5"), ("hidden_size", "1e30"), ("vocab_size", "99999999999999999999"),
                               ("num_attention_heads", "-9223372036854775808")] {
            named("raw-json-\(key)-\(literal)", [key]) { try rawJSONSettingKey($0, key, literal: literal) }
        }
        if facts.hasVLM {
            named("vlm-json-image-token-outside-vocab", ["vlm_json", "image_token_id"]) {
                try editJSON($0, "vlm_json") { $0["image_token_id"] = 1_000_000 }
            }
            named("vlm-json-experts-disagree", ["mlx-vlm", "num_experts"]) {
                try editJSON($0, "vlm_json") { outer in
                    var text = outer["text_config"] as! [String: Any]
                    text["model_type"] = "qwen3_5_moe"; text["num_experts"] = 4; text["num_experts_per_tok"] = 2
                    text["moe_intermediate_size"] = 8; text["shared_expert_intermediate_size"] = 8
                    outer["text_config"] = text; outer["model_type"] = "qwen3_5_moe"
                }
            }
        }
        named("effective-json-disagrees", ["effective_json", "hidden_size"]) {
            try editJSON($0, "effective_json") { $0["hidden_size"] = 64 }
        }
        named("effective-json-layer-types", ["layer_types"]) {
            try editJSON($0, "effective_json") { $0["layer_types"] = Array(($0["layer_types"] as! [String]).reversed()) }
        }
        named("effective-json-missing-key", ["effective_json", "rotary_dims"]) {
            try editJSON($0, "effective_json") { $0.removeValue(forKey: "rotary_dims") }
        }
        if !facts.visionWeights.isEmpty { visionCases(facts, &rng) { add($0, scenario: $1, $2, $3) } }
        return out
    }
}
