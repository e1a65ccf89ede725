import Foundation
import ParityCore

// Why an invariant has nothing to check on a model directory's golden. Two different answers:
// - not applicable: the checkpoint itself has no such path (a text-only checkpoint has no vision
//   tower, image prompt or MRoPE position; a config mlx-vlm refuses has no mlx-vlm path at all).
//   Reported with the reason, and not a failure.
// - a coverage gap: the checkpoint has the path but the golden does not hold it. NOT RUN, a failure.
// Random-weight goldens always hold every path, so nothing is ever excused for them.

public enum Absence: Equatable, Sendable {
    case notApplicable(String)
    case coverageGap(String)
}

extension InvariantRegistry {
    /// Invariants that need only the mlx-lm paths of a golden (and the oracle's, which holds them
    /// to each other); every other one needs mlx-vlm.
    static let textOnlyInvariants: Set<String> = [
        "golden-lm", "lm-uncached-vs-cached", "lm-prefill-vs-prefix-decode", "lm-chunked-sweep", "lm-batch-vs-single",
        OracleReport.invariantID,
    ]
    /// Invariants that need the unified model but no mlx-vlm path in the golden.
    static let unifiedTextInvariants: Set<String> = ["unified-text-vs-lm"]

    /// For a model directory's golden: why each invariant that needs what the golden lacks is
    /// absent (empty for random-weight goldens).
    public static func absences(_ golden: GoldenFile) -> [String: Absence] {
        guard golden.usesModelDirectory else { return [:] }
        let needsVLM = all.map(\.id).filter { !textOnlyInvariants.contains($0) && !unifiedTextInvariants.contains($0) }
        var out: [String: Absence] = [:]
        if let oracle = oracleAbsence(golden) { out[OracleReport.invariantID] = oracle }
        do {
            _ = try TextConfig.mlxVLM(json: Data(golden.rawConfigJSON.utf8), source: "config.json")
        } catch {
            let reason = "mlx-vlm 0.7.10 refuses this checkpoint's config (\(error)), so it has no mlx-vlm path "
                + "and no unified model; mlx-lm runs it"
            for id in needsVLM + unifiedTextInvariants { out[id] = .notApplicable(reason) }
            return out
        }
        if !hasVisionConfig(golden.rawConfigJSON) {
            let reason = "text-only checkpoint: its config.json has no vision_config, so there is no vision tower, "
                + "image prompt or MRoPE position to check"
            for id in needsVLM { out[id] = .notApplicable(reason) }
        } else if !golden.file.hasAttribute("vlm_json", of: "/config") {
            let reason = "the checkpoint has a vision_config but its golden holds no mlx-vlm path (make_golden.py "
                + "--from-model writes them for float32, unquantized directories only): a coverage gap, not a pass"
            for id in needsVLM { out[id] = .coverageGap(reason) }
        } else if !golden.file.exists("/vision") {
            out["vision-image-alone-vs-batched"] = .coverageGap("the golden holds no image prompt through the checkpoint's "
                + "own vision tower (make_golden.py --from-model writes them for float32, unquantized directories; "
                + "regenerate it): a coverage gap, not a pass")
        }
        return out
    }

    /// Why a model directory's golden has no oracle ratio to judge. Not applicable: the generator
    /// recorded that a float64 copy of the checkpoint cannot be made here (`oracle_absent_json`,
    /// applicable false), or the checkpoint has one float32 path only (a bf16 text-only one: its
    /// bf16 run is not float32, and it has no mlx-vlm path), where the oracle table still shows the
    /// distance. A coverage gap: the oracle was turned off by choice, or its reason is unrecorded.
    static func oracleAbsence(_ golden: GoldenFile) -> Absence? {
        guard OracleReport.unavailable(golden) == nil else { return nil }
        if golden.file.exists("/oracle") {
            guard !OracleReport.comparesTwoPaths(golden) else { return nil }
            return .notApplicable("one float32 path only (\(OracleReport.float32Paths(golden).sorted().joined(separator: ", "))"
                + " at most): the native run is not float32 and the checkpoint has no second float32 path to hold it to; "
                + "the oracle table gives its distance")
        }
        struct Recorded: Decodable { var reason: String; var applicable: Bool }
        if golden.file.hasAttribute("oracle_absent_json", of: "/"),
           let text = try? golden.file.stringAttribute("oracle_absent_json", of: "/"),
           let recorded = try? JSONDecoder().decode(Recorded.self, from: Data(text.utf8)) {
            return recorded.applicable ? .coverageGap("made without the float64 oracle: \(recorded.reason)")
                : .notApplicable("no float64 oracle: \(recorded.reason)")
        }
        return .coverageGap("made without the float64 oracle (make_golden.py --oracle off): a coverage gap, not a pass")
    }

    /// A top-level vision_config object, as the libraries read it from a checkpoint's config.json.
    static func hasVisionConfig(_ json: String) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return false }
        return object["vision_config"] is [String: Any]
    }
}
