import Foundation

// Which weight files a model directory has, checked before a byte of them is read. mlx-lm loads
// every model*.safetensors and never reads model.safetensors.index.json; a checkpoint with a
// shard gone then fails late, on a missing weight, without naming the file. Here the shard
// names (model-00002-of-00003.safetensors) and the index are checked against the files present,
// so a missing shard or an index naming an absent file is an error that names it.

enum ShardLayout {
    static let indexName = "model.safetensors.index.json"
    private static let shardPattern = #"^model-([0-9]+)-of-([0-9]+)\.safetensors$"#

    /// The model*.safetensors files in `names` (sorted), once every numbered shard is present.
    static func weightFiles(directory: String, names: [String]) throws -> [String] {
        let files = names.filter { $0.hasPrefix("model") && $0.hasSuffix(".safetensors") }.sorted()
        let regex = try NSRegularExpression(pattern: shardPattern)
        var totals: [String: Int] = [:]          // "of" part as written → its value
        var width = 5
        for name in files {
            let range = NSRange(name.startIndex..., in: name)
            guard let match = regex.firstMatch(in: name, range: range),
                  let indexRange = Range(match.range(at: 1), in: name), let totalRange = Range(match.range(at: 2), in: name),
                  let total = Int(name[totalRange]) else { continue }
            totals[String(name[totalRange])] = total
            width = name[indexRange].count
        }
        if totals.count > 1 {
            throw CheckpointError.inconsistentShards(directory: directory, totals: totals.keys.sorted())
        }
        if let (written, total) = totals.first, total <= 10_000 {
            for i in 1...max(total, 1) {
                let expected = "model-" + padded(i, width) + "-of-" + written + ".safetensors"
                if !files.contains(expected) {
                    throw CheckpointError.missingShard(directory: directory, file: expected, shard: i, of: total)
                }
            }
        }
        return files
    }

    /// model.safetensors.index.json's weight_map (tensor → file), or nil without an index; every
    /// file it names must be among `files`.
    static func index(directory: URL, files: [String]) throws -> [String: String]? {
        let url = directory.appendingPathComponent(indexName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let source = url.path
        guard let data = try? Data(contentsOf: url) else {
            throw CheckpointError.badIndex(index: source, reason: "cannot be read")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CheckpointError.badIndex(index: source, reason: "not a JSON object")
        }
        guard let map = object["weight_map"] as? [String: Any] else {
            throw CheckpointError.badIndex(index: source, reason: "key 'weight_map' is missing or not an object")
        }
        var out: [String: String] = [:]
        for (tensor, value) in map.sorted(by: { $0.key < $1.key }) {
            guard let file = value as? String else {
                throw CheckpointError.badIndex(index: source, reason: "weight_map['\(tensor)'] is not a file name")
            }
            guard files.contains(file) else {
                throw CheckpointError.indexNamesMissingFile(index: source, tensor: tensor, file: file)
            }
            out[tensor] = file
        }
        return out
    }

    /// Every tensor the index names is in the file it names.
    static func checkIndex(_ map: [String: String], index: String, owner: [String: SafetensorsFile]) throws {
        for (tensor, file) in map.sorted(by: { $0.key < $1.key }) {
            let found = owner[tensor].map { URL(fileURLWithPath: $0.source).lastPathComponent }
            if found != file {
                throw CheckpointError.indexTensorNotInFile(index: index, tensor: tensor, file: file, foundIn: found)
            }
        }
    }

    private static func padded(_ i: Int, _ width: Int) -> String {
        let digits = String(i)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
