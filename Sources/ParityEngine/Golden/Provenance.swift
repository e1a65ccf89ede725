import Checkpoint
import Foundation
import GoldenIO

// How a golden was made (root attributes written by tools/make_golden.py) and whether it is
// still what the repository would make today. A stale golden is not compared: its logits may
// differ because the generator, the pinned reference or the model files changed, and that is
// not a parity failure of the Swift code.

public struct GoldenProvenance: Sendable, Equatable {
    /// Package → version as recorded (keys "mlx", "mlx_lm", "mlx_vlm", "python", "numpy", "h5py").
    public var versions: [String: String]
    public var generator: String
    public var generatorSHA256: String
    public var seed: Int?
    /// "random" (weights stored in the file) or "model_dir" (weights in a model directory).
    public var weightsSource: String
    /// For model_dir goldens: the directory, relative to the golden's folder.
    public var modelDirectory: String?
    /// For model_dir goldens: file name → sha256 of config.json and every model*.safetensors.
    public var modelFiles: [String: String]
    /// Activation dtype of the mlx_lm path ("float32", "bfloat16").
    public var dtype: String
    public var history: [HistoryEntry]
    /// Groups written by the generator's helper modules (/probes, /vision): group → the helper
    /// (e.g. "tools/golden_vision.py") and its sha256 when the group was written.
    public var components: [String: (generator: String, sha256: String)] = [:]

    public static func == (a: GoldenProvenance, b: GoldenProvenance) -> Bool {
        a.versions == b.versions && a.generator == b.generator && a.generatorSHA256 == b.generatorSHA256
            && a.seed == b.seed && a.weightsSource == b.weightsSource && a.modelDirectory == b.modelDirectory
            && a.modelFiles == b.modelFiles && a.dtype == b.dtype && a.history == b.history
            && a.components.mapValues { [$0.generator, $0.sha256] } == b.components.mapValues { [$0.generator, $0.sha256] }
    }

    public struct HistoryEntry: Sendable, Equatable, Decodable {
        public var date: String
        public var reason: String
        public var generatorSHA256: String?
        enum CodingKeys: String, CodingKey {
            case date, reason
            case generatorSHA256 = "generator_sha256"
        }
    }

    static func read(_ file: H5File, path: String) throws -> GoldenProvenance {
        func text(_ name: String) throws -> String { try file.stringAttribute(name, of: "/") }
        func json<T: Decodable>(_ name: String, _ type: T.Type) throws -> T {
            let raw = try text(name)
            do { return try JSONDecoder().decode(T.self, from: Data(raw.utf8)) } catch {
                throw GoldenError.invalid(file: path, path: "/ \(name)", reason: "not the expected JSON: \(raw.prefix(80))")
            }
        }
        let source = file.hasAttribute("weights_source", of: "/") ? try text("weights_source") : "random"
        let modelFiles = file.hasAttribute("model_files_json", of: "/") ? try json("model_files_json", [String: String].self) : [:]
        var components: [String: (generator: String, sha256: String)] = [:]
        for group in ["/probes", "/vision", "/library_distances", "/candidates", "/oracle"] where file.hasAttribute("generator_sha256", of: group) {
            components[group] = (try file.stringAttribute("generator", of: group),
                                 try file.stringAttribute("generator_sha256", of: group))
        }
        var provenance = GoldenProvenance(
            versions: try json("versions_json", [String: String].self),
            generator: try text("generator"),
            generatorSHA256: try text("generator_sha256"),
            seed: try? file.intAttribute("weights_seed", of: "/"),
            weightsSource: source,
            modelDirectory: file.hasAttribute("model_dir", of: "/") ? try text("model_dir") : nil,
            modelFiles: modelFiles,
            dtype: (try? text("dtype")) ?? "float32",
            history: file.hasAttribute("history_json", of: "/") ? try json("history_json", [HistoryEntry].self) : [])
        provenance.components = components
        return provenance
    }
}

/// Where to find what a golden's provenance is checked against.
public struct FreshnessSources: Sendable {
    /// tools/make_golden.py of the repository the goldens belong to.
    public var generator: String?
    /// tools/requirements.txt with the exact pins.
    public var requirements: String?

    public init(generator: String? = nil, requirements: String? = nil) {
        self.generator = generator
        self.requirements = requirements
    }

    /// The repository copies found by walking up from the golden's folder (at most 5 levels)
    /// to a folder holding tools/make_golden.py; explicit paths win.
    public static func locate(for goldenPath: String, explicit: FreshnessSources = .init()) -> FreshnessSources {
        var found = explicit
        var dir = URL(fileURLWithPath: goldenPath).standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<6 {
            let tools = dir.appendingPathComponent("tools")
            let generator = tools.appendingPathComponent("make_golden.py").path
            if FileManager.default.fileExists(atPath: generator) {
                found.generator = found.generator ?? generator
                let req = tools.appendingPathComponent("requirements.txt").path
                if FileManager.default.fileExists(atPath: req) { found.requirements = found.requirements ?? req }
                break
            }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        return found
    }
}

public struct Freshness: Sendable, Equatable {
    /// What changed since the golden was made; empty means fresh.
    public var changes: [String]
    /// What could not be checked (no generator or requirements found).
    public var unverified: [String]

    public var isStale: Bool { !changes.isEmpty }

    /// Package names in requirements.txt → keys of versions_json.
    static let pinnedKeys = ["mlx": "mlx", "mlx-lm": "mlx_lm", "mlx-vlm": "mlx_vlm", "numpy": "numpy", "h5py": "h5py"]
    /// The float64 oracle's pins (torch, transformers), in requirements-torch.txt beside
    /// requirements.txt; checked for goldens that hold the oracle (an /oracle group).
    static let oracleRequirements = "requirements-torch.txt"
    static let oraclePinnedKeys = ["torch": "torch", "transformers": "transformers"]

    public static func check(_ provenance: GoldenProvenance, sources: FreshnessSources,
                             modelDirectory: String? = nil) -> Freshness {
        var f = Freshness(changes: [], unverified: [])
        if let generator = sources.generator {
            if let sha = try? generatorSHA256(generator) {
                if sha != provenance.generatorSHA256 {
                    f.changes.append("generator changed: the golden was made by \(provenance.generator) sha256 \(provenance.generatorSHA256.prefix(12))…, \(generator) is now \(sha.prefix(12))…")
                }
            } else {
                f.unverified.append("cannot read the generator \(generator)")
            }
        } else {
            f.unverified.append("generator hash not checked (no tools/make_golden.py found above the golden; pass --generator)")
        }
        // Helper modules: recorded relative to the repository (tools/golden/probes.py); goldens
        // made before the package split name a file beside the generator (tools/golden_probes.py).
        if let generator = sources.generator {
            let tools = URL(fileURLWithPath: generator).deletingLastPathComponent()
            let root = tools.deletingLastPathComponent()
            for (group, component) in provenance.components.sorted(by: { $0.key < $1.key }) {
                let recorded = root.appendingPathComponent(component.generator).path
                let helper = FileManager.default.fileExists(atPath: recorded) ? recorded
                    : tools.appendingPathComponent(URL(fileURLWithPath: component.generator).lastPathComponent).path
                guard let sha = try? SHA256.hex(fileAt: helper) else {
                    f.unverified.append("cannot read \(helper), which wrote \(group)")
                    continue
                }
                if sha != component.sha256 {
                    f.changes.append("\(group) generator changed: written by \(component.generator) sha256 \(component.sha256.prefix(12))…, \(helper) is now \(sha.prefix(12))…")
                }
            }
        }
        if let requirements = sources.requirements, let text = try? String(contentsOfFile: requirements, encoding: .utf8) {
            f.changes += pinChanges(text, keys: pinnedKeys, file: URL(fileURLWithPath: requirements).lastPathComponent, provenance)
        } else {
            f.unverified.append("versions not checked against the pins (no tools/requirements.txt found; pass --requirements)")
        }
        if provenance.components["/oracle"] != nil, let requirements = sources.requirements {
            let oracle = URL(fileURLWithPath: requirements).deletingLastPathComponent().appendingPathComponent(oracleRequirements).path
            if let text = try? String(contentsOfFile: oracle, encoding: .utf8) {
                f.changes += pinChanges(text, keys: oraclePinnedKeys, file: oracleRequirements, provenance)
            } else {
                f.unverified.append("oracle versions not checked (no \(oracle))")
            }
        }
        if let dir = modelDirectory {
            for (name, recorded) in provenance.modelFiles.sorted(by: { $0.key < $1.key }) {
                let path = URL(fileURLWithPath: dir).appendingPathComponent(name).path
                guard let sha = try? SHA256.hex(fileAt: path) else {
                    f.changes.append("model file \(name) is missing from \(dir)")
                    continue
                }
                if sha != recorded {
                    f.changes.append("model file \(name) changed: recorded sha256 \(recorded.prefix(12))…, now \(sha.prefix(12))…")
                }
            }
        }
        return f
    }

    /// The generator's hash as tools/golden/provenance.py computes it. With a tools/golden/
    /// package beside make_golden.py: sha256 of the manifest "<path>\0<sha256 of the file>\n"
    /// over tools/make_golden.py and every tools/golden/**/*.py (repository-relative paths, sorted
    /// by their UTF-8 bytes). Without one (an older tree): sha256 of make_golden.py itself.
    static func generatorSHA256(_ generator: String) throws -> String {
        let package = URL(fileURLWithPath: generator).deletingLastPathComponent().appendingPathComponent("golden")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: package.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return try SHA256.hex(fileAt: generator)
        }
        guard let walker = FileManager.default.enumerator(atPath: package.path) else {
            throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: package.path])
        }
        var files = [(relative: "tools/make_golden.py", path: generator)]
        for case let relative as String in walker where relative.hasSuffix(".py") {
            let path = package.appendingPathComponent(relative).path
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
                files.append((relative: "tools/golden/" + relative, path: path))
            }
        }
        files.sort { Array($0.relative.utf8).lexicographicallyPrecedes(Array($1.relative.utf8)) }
        var manifest = ""
        for file in files {
            manifest += file.relative + "\0" + (try SHA256.hex(fileAt: file.path)) + "\n"
        }
        return SHA256.hex(Data(manifest.utf8))
    }

    /// Each pinned package whose recorded version differs from the pin in `file`.
    static func pinChanges(_ text: String, keys: [String: String], file: String, _ provenance: GoldenProvenance) -> [String] {
        pins(text).sorted(by: { $0.key < $1.key }).compactMap { package, version in
            guard let key = keys[package] else { return nil }
            let recorded = provenance.versions[key] ?? "(not recorded)"
            return recorded == version ? nil : "\(package): golden made with \(recorded), \(file) pins \(version)"
        }
    }

    /// `name==version` lines of a requirements file (comments and other specifiers ignored).
    static func pins(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let code = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let parts = code.components(separatedBy: "==")
            guard parts.count == 2 else { continue }
            let name = parts[0].trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: "_", with: "-")
            out[name] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        return out
    }
}
