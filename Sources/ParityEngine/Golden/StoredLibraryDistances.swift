import Foundation

// The reference library's own distances between two schedules of one prompt, stored by the
// generator (tools/golden_distances.py) under /library_distances/<invariant>: what a bit-exact
// port must reproduce pair by pair, and what upstream's bound is checked against.

public struct LibraryPair: Sendable, Equatable {
    public var maxAbs: Float
    public var differing: Int
    public var compared: Int
}

public struct StoredLibraryDistances: Sendable {
    public var library: String
    /// The bound of upstream's own tests for these pairs; a library past it is a finding.
    public var upstreamBound: Float
    public var pairs: [String: LibraryPair]

    /// The distances an invariant compares against; an older golden without them gets an error
    /// that says to regenerate it, never a fallback constant.
    public static func read(_ golden: GoldenFile, invariant: String) throws -> StoredLibraryDistances {
        let group = "/library_distances/\(invariant)"
        guard golden.file.exists(group) else {
            throw GoldenError.invalid(file: golden.path, path: group,
                reason: "this golden holds no library distances for \(invariant) (it was made before the generator stored them); regenerate it with 'make golden'")
        }
        let raw = try golden.file.stringAttribute("pairs_json", of: group)
        struct Entry: Decodable { var label: String; var max_abs: Double; var differing: Int; var compared: Int }
        guard let entries = try? JSONDecoder().decode([Entry].self, from: Data(raw.utf8)) else {
            throw GoldenError.invalid(file: golden.path, path: group + " pairs_json", reason: "expected a list of {label, max_abs, differing, compared}")
        }
        var pairs: [String: LibraryPair] = [:]
        for e in entries { pairs[e.label] = LibraryPair(maxAbs: Float(e.max_abs), differing: e.differing, compared: e.compared) }
        return StoredLibraryDistances(library: try golden.file.stringAttribute("library", of: group),
                                      upstreamBound: Float(try golden.file.doubleAttribute("upstream_bound", of: group)),
                                      pairs: pairs)
    }

    /// `measurements` with the library's distance for the same pair attached; a pair the golden
    /// did not measure is an error (the two sides no longer build the same pairs).
    func attach(_ measurements: [Measurement], golden: GoldenFile, invariant: String) throws -> [Measurement] {
        try measurements.map { m in
            guard let pair = pairs[m.label] else {
                throw GoldenError.invalid(file: golden.path, path: "/library_distances/\(invariant)",
                    reason: "no library distance for the pair '\(m.label)' (stored: \(pairs.count) pairs); regenerate the golden")
            }
            var m = m
            m.library = pair
            m.libraryName = library
            m.upstreamBound = upstreamBound
            return m
        }
    }
}
