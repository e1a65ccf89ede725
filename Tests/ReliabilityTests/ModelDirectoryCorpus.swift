import Foundation

// Bad model directories, derived from the committed checkpoints (golden/checkpoints/*): each case
// is a copy of one with a shard missing, an index that lies, a cut safetensors file, a tensor of
// the wrong shape or dtype, a quantization the config cannot mean, or a vision tower without a
// vision_config. `check DIR` runs on the copy (past the staleness its edits cause, which is not
// what is tested) and must end in an error naming the file and the tensor or key.

extension Paths {
    static var checkpoints: [URL] {
        let dir = root.appendingPathComponent("golden/checkpoints")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().map { dir.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("parity.h5").path) }
    }
}

/// A safetensors file as header entries and the data section, to be edited and written back.
/// Built once from a pristine file and only read by the cases (their edits work on copies).
struct SafetensorsParts: @unchecked Sendable {
    var entries: [String: [String: Any]]
    var metadata: Any?
    var data: Data

    init(_ bytes: Data) throws {
        let n = Int(bytes.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        var header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + n))) as! [String: Any]
        metadata = header.removeValue(forKey: "__metadata__")
        entries = header.mapValues { $0 as! [String: Any] }
        data = bytes.subdata(in: (8 + n)..<bytes.count)
    }

    func bytes(of name: String) -> Data {
        let offsets = entries[name]!["data_offsets"] as! [Int]
        return data.subdata(in: offsets[0]..<offsets[1])
    }

    /// The file holding only `names`, data repacked in name order.
    func file(_ names: [String]) throws -> Data {
        var header: [String: Any] = [:]
        var section = Data()
        for name in names.sorted() {
            var entry = entries[name]!
            let chunk = bytes(of: name)
            entry["data_offsets"] = [section.count, section.count + chunk.count]
            header[name] = entry
            section.append(chunk)
        }
        if let metadata { header["__metadata__"] = metadata }
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var out = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) }
        out.append(json)
        out.append(section)
        return out
    }

    /// The file with every tensor, its header edited.
    func file() throws -> Data { try file(Array(entries.keys)) }
}

extension BadInputCorpus {
    static func modelDirectoryCases(_ checkpoint: URL) -> [BadInput] {
        let name = checkpoint.lastPathComponent
        let golden = checkpoint.appendingPathComponent("parity.h5")
        let weightsURL = checkpoint.appendingPathComponent("model.safetensors")
        guard let parts = try? SafetensorsParts(Data(contentsOf: weightsURL)) else { return [] }
        let names = parts.entries.keys.sorted()
        let packed = names.first { parts.entries[$0]!["dtype"] as? String == "U32" }
        let norm = names.first { $0.hasSuffix("input_layernorm.weight") }!

        var out: [BadInput] = []
        /// A copy of the checkpoint in the case's directory, then `edit` on that directory.
        func add(_ id: String, _ mentions: [String], _ edit: @escaping @Sendable (URL) throws -> Void) {
            out.append(BadInput(id: "model-dir/\(name)/\(id)", golden: golden, scenario: nil, expectation: .namedError(mentions),
                                build: { path in
                let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
                for file in try FileManager.default.contentsOfDirectory(atPath: checkpoint.path) {
                    let target = file == "parity.h5" ? URL(fileURLWithPath: path) : dir.appendingPathComponent(file)
                    try FileManager.default.copyItem(at: checkpoint.appendingPathComponent(file), to: target)
                }
                try edit(dir)
            }, checksDirectory: true, arguments: ["--ignore-stale"]))
        }
        @Sendable func write(_ data: Data, _ dir: URL, _ file: String) throws { try data.write(to: dir.appendingPathComponent(file)) }
        @Sendable func index(_ map: [String: String], _ dir: URL) throws {
            try write(try JSONSerialization.data(withJSONObject: ["metadata": [:] as [String: Any], "weight_map": map]),
                      dir, "model.safetensors.index.json")
        }
        let half = names.count / 2
        let shardNames = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        /// The checkpoint split in two shards with an index naming them, as save_pretrained writes.
        @Sendable func resharded(_ dir: URL) throws {
            try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
            try write(try parts.file(Array(names[..<half])), dir, shardNames[0])
            try write(try parts.file(Array(names[half...])), dir, shardNames[1])
            var map: [String: String] = [:]
            for (i, n) in names.enumerated() { map[n] = shardNames[i < half ? 0 : 1] }
            try index(map, dir)
        }

        add("shard-missing", [shardNames[1], "missing"]) { dir in
            try resharded(dir)
            try FileManager.default.removeItem(at: dir.appendingPathComponent(shardNames[1]))
        }
        add("shard-count-disagrees", ["disagree", "-of-00003"]) { dir in
            try resharded(dir)
            try FileManager.default.moveItem(at: dir.appendingPathComponent(shardNames[1]),
                                             to: dir.appendingPathComponent("model-00002-of-00003.safetensors"))
        }
        add("index-names-absent-file", ["model.safetensors.index.json", names[0], "model-00007-of-00009.safetensors"]) { dir in
            var map = Dictionary(uniqueKeysWithValues: names.map { ($0, "model.safetensors") })
            map[names[0]] = "model-00007-of-00009.safetensors"
            try index(map, dir)
        }
        add("index-tensor-in-other-shard", ["model.safetensors.index.json", names[0], shardNames[1]]) { dir in
            try resharded(dir)
            var map: [String: String] = [:]
            for (i, n) in names.enumerated() { map[n] = shardNames[i < half ? 0 : 1] }
            map[names[0]] = shardNames[1]
            try index(map, dir)
        }
        add("index-names-unknown-tensor", ["model.safetensors.index.json", "language_model.model.layers.99.mlp.up_proj.weight"]) { dir in
            var map = Dictionary(uniqueKeysWithValues: names.map { ($0, "model.safetensors") })
            map["language_model.model.layers.99.mlp.up_proj.weight"] = "model.safetensors"
            try index(map, dir)
        }
        add("index-not-json", ["model.safetensors.index.json", "not a JSON object"]) { dir in
            try write(Data("weight_map: {}".utf8), dir, "model.safetensors.index.json")
        }
        for cut in [4, 40] {
            add("header-truncated-\(cut)", ["model.safetensors"]) { dir in
                try write(try Data(contentsOf: weightsURL).prefix(cut), dir, "model.safetensors")
            }
        }
        add("data-truncated", ["model.safetensors", "outside the"]) { dir in
            let bytes = try Data(contentsOf: weightsURL)
            try write(bytes.prefix(bytes.count - 64), dir, "model.safetensors")
        }
        add("tensor-shape-disagrees-with-config", ["model.safetensors", norm, "config.json implies"]) { dir in
            var edited = parts
            let shape = edited.entries[norm]!["shape"] as! [Int]
            edited.entries[norm]!["shape"] = [2, shape[0] / 2]
            try write(try edited.file(), dir, "model.safetensors")
        }
        add("tensor-missing-for-config", [norm, "missing"]) { dir in
            // Gone from the index too, which would otherwise name it first.
            try write(try parts.file(names.filter { $0 != norm }), dir, "model.safetensors")
            try index(Dictionary(uniqueKeysWithValues: names.filter { $0 != norm }.map { ($0, "model.safetensors") }), dir)
        }
        if let packed {
            add("packed-weight-dtype-disagrees", ["model.safetensors", packed, "F32", "U32"]) { dir in
                var edited = parts
                edited.entries[packed]!["dtype"] = "F32"
                try write(try edited.file(), dir, "model.safetensors")
            }
        }
        add("tensor-dtype-unsupported", ["model.safetensors", norm, "I32"]) { dir in
            var edited = parts
            edited.entries[norm]!["dtype"] = "I32"
            try write(try edited.file(), dir, "model.safetensors")
        }
        // (key, JSON literal of its value)
        for (key, literal) in [("mode", "\"nf4\""), ("bits", "7"), ("bits", "0"), ("group_size", "\"64\"")] {
            add("quantization-\(key)-\(literal)", ["config.json", "quantization.\(key)"]) { dir in
                let url = dir.appendingPathComponent("config.json")
                var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
                var block = config["quantization"] as? [String: Any] ?? ["group_size": 64, "bits": 4]
                block[key] = try JSONSerialization.jsonObject(with: Data(literal.utf8), options: .fragmentsAllowed)
                config["quantization"] = block
                config.removeValue(forKey: "quantization_config")
                try JSONSerialization.data(withJSONObject: config).write(to: url)
            }
        }
        // Only a text-only directory can lack the vision_config its vision weights need.
        let multimodal = ((try? JSONSerialization.jsonObject(with: Data(contentsOf: checkpoint.appendingPathComponent("config.json"))))
            as? [String: Any])?["vision_config"] != nil
        if !multimodal { add("vision-weights-without-vision-config", ["model.safetensors", "vision_tower.blocks.0.norm1.weight", "vision_config"]) { dir in
            var edited = parts
            edited.entries["vision_tower.blocks.0.norm1.weight"] = ["dtype": "F32", "shape": [4], "data_offsets": [0, 16]]
            // The new entry's bytes are the data section's first 16: their values do not matter.
            try write(try edited.file(), dir, "model.safetensors")
        } }
        // A multimodal directory's own tower (read by check in place, sanitized as mlx-vlm does).
        func isVision(_ n: String) -> Bool { n.hasPrefix("vision_tower.") || n.hasPrefix("model.visual.") }
        let fc1 = names.first { isVision($0) && $0.hasSuffix("blocks.0.mlp.linear_fc1.weight") }
        let patch = names.first { isVision($0) && $0.hasSuffix("patch_embed.proj.weight") }
        if multimodal, let fc1, let patch {
            add("vision-tensor-shape-disagrees", ["model.safetensors", fc1, "vision_config implies"]) { dir in
                var edited = parts
                edited.entries[fc1]!["shape"] = Array((edited.entries[fc1]!["shape"] as! [Int]).reversed())
                try write(try edited.file(), dir, "model.safetensors")
            }
            add("vision-patch-embedding-in-no-layout", ["model.safetensors", patch, "in_channels"]) { dir in
                var edited = parts
                var shape = edited.entries[patch]!["shape"] as! [Int]   // [D, C, Tp, P, P] or [D, Tp, P, P, C]
                shape = [shape[0], shape[1] * shape[2] * shape[3] * shape[4], 1, 1, 1]
                edited.entries[patch]!["shape"] = shape
                try write(try edited.file(), dir, "model.safetensors")
            }
        }
        return out
    }
}
