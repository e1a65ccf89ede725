// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "qwen-parity",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "qwen-parity", targets: ["qwen-parity"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries, found through pkg-config (make deps installs them).
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),

        // The in-order float32 GEMM kernel (C: AVX-512F / AVX2 / baseline, chosen at run time).
        .target(name: "ParityKernels"),
        // Float32 tensors; the matrix product (in-order kernel, or cblas_sgemm on request).
        .target(name: "ParityTensor", dependencies: ["CBLAS", "ParityKernels"]),
        // HDF5 reading and writing for golden files.
        .target(name: "GoldenIO", dependencies: ["CHDF5"]),
        // Config, weight names, layer kinds, caches and the protocol both implementations share.
        .target(name: "ParityCore", dependencies: ["ParityTensor", "GoldenIO"]),
        // Mirror of mlx-lm's text path.
        .target(name: "LMMirror", dependencies: ["ParityCore", "ParityTensor"]),
        // Mirror of mlx-vlm's language model: MRoPE, stateful positions, chunked GatedDeltaNet prefill.
        .target(name: "VLMMirror", dependencies: ["ParityCore", "ParityTensor"]),
        // mlx-engine's unified (patched) Qwen 3.5 text model: the lm mirror for text calls, the vlm
        // mirror's MRoPE route for calls with 3-D positions, one set of weights, position state.
        .target(name: "UnifiedModel", dependencies: ["ParityCore", "ParityTensor", "LMMirror", "VLMMirror"]),
        // MLX model directories: safetensors, bf16/f16 widening, affine dequantization, sanitize.
        .target(name: "Checkpoint", dependencies: ["ParityCore", "ParityTensor"]),
        // Scenarios, invariants, tolerances, reports, golden provenance.
        .target(name: "ParityEngine", dependencies: ["ParityCore", "ParityTensor", "GoldenIO", "LMMirror", "VLMMirror", "UnifiedModel", "Checkpoint"]),
        // Side-by-side benchmark: the Swift mirror against the Python peers, each in its own process.
        .target(name: "ParityBench", dependencies: ["ParityEngine", "LMMirror", "VLMMirror", "ParityCore", "ParityTensor", "GoldenIO", "Checkpoint"]),
        // Command-line commands (the executable only calls into this).
        .target(name: "ParityCLI", dependencies: [
            "ParityEngine", "ParityBench", "ParityCore", "ParityTensor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "qwen-parity", dependencies: ["ParityCLI"]),

        .testTarget(name: "ParityTensorTests", dependencies: ["ParityTensor", "TestSupport"]),
        .testTarget(name: "GoldenIOTests", dependencies: ["GoldenIO"]),
        .testTarget(name: "ParityCoreTests", dependencies: ["ParityCore"]),
        // Helpers the test targets share (deterministic random tensors and tiny models).
        .target(name: "TestSupport", dependencies: ["ParityCore", "ParityTensor"], path: "Tests/TestSupport"),
        .testTarget(name: "LMMirrorTests", dependencies: ["LMMirror", "ParityCore", "TestSupport"]),
        .testTarget(name: "VLMMirrorTests", dependencies: ["VLMMirror", "ParityCore", "ParityTensor", "TestSupport"]),
        .testTarget(name: "UnifiedModelTests", dependencies: ["UnifiedModel", "LMMirror", "VLMMirror", "ParityCore", "ParityTensor", "TestSupport"]),
        .testTarget(name: "ParityEngineTests", dependencies: ["ParityEngine", "GoldenIO", "Checkpoint", "UnifiedModel", "VLMMirror", "TestSupport"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "ParityCore", "ParityTensor", "TestSupport"]),
        // Bad inputs through the built CLI, and kill tests; they spawn products `swift test` builds.
        .testTarget(name: "ReliabilityTests", dependencies: ["GoldenIO", "ParityEngine"]),
        // Test-only: one AtomicFile.write, for the kill test to SIGKILL part-way.
        .executableTarget(name: "atomic-write-probe", dependencies: ["ParityEngine"], path: "Tests/AtomicWriteProbe"),
        .testTarget(name: "ParityBenchTests", dependencies: ["ParityBench", "ParityCore", "ParityTensor", "VLMMirror", "TestSupport"]),
    ]
)
