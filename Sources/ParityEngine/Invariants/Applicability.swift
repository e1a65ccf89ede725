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

    /// A top-level vision_config object, as the libraries read it from a checkpoint's config.json.
    static func hasVisionConfig(_ json: String) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return false }
        return object["vision_config"] is [String: Any]
    }
}
