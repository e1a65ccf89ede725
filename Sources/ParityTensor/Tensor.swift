// A float32 tensor: a shape and its elements, contiguous and row-major. No strides, no views.

public struct Tensor: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "[Tensor] negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == data.count,
                     "[Tensor] shape \(shape) needs \(shape.reduce(1, *)) elements, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }
    /// Size of the last axis (the feature axis of activations).
    public var lastDim: Int { shape.last ?? 1 }
    /// Number of rows when the tensor is viewed as [rows, lastDim].
    public var rows: Int { shape.dropLast().reduce(1, *) }

    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Elements `[start, start + length)` of axis `axis`.
    public func slice(axis: Int, start: Int, length: Int) -> Tensor {
        precondition(axis >= 0 && axis < rank, "[slice] axis \(axis) of shape \(shape)")
        precondition(start >= 0 && length >= 0 && start + length <= shape[axis],
                     "[slice] \(start)..<\(start + length) of axis \(axis) in \(shape)")
        let outer = shape[..<axis].reduce(1, *)
        let inner = shape[(axis + 1)...].reduce(1, *)
        var out = [Float]()
        out.reserveCapacity(outer * length * inner)
        for o in 0..<outer {
            let base = (o * shape[axis] + start) * inner
            out.append(contentsOf: data[base..<(base + length * inner)])
        }
        var newShape = shape
        newShape[axis] = length
        return Tensor(shape: newShape, data: out)
    }

    /// Concatenates tensors that agree on every axis but `axis`.
    public static func concatenate(_ parts: [Tensor], axis: Int) -> Tensor {
        precondition(!parts.isEmpty, "[concatenate] no tensors")
        let first = parts[0]
        for p in parts {
            precondition(p.rank == first.rank, "[concatenate] ranks \(p.shape) vs \(first.shape)")
            for a in 0..<first.rank where a != axis {
                precondition(p.shape[a] == first.shape[a], "[concatenate] \(p.shape) vs \(first.shape) on axis \(axis)")
            }
        }
        let outer = first.shape[..<axis].reduce(1, *)
        let inner = first.shape[(axis + 1)...].reduce(1, *)
        var out = [Float]()
        out.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for o in 0..<outer {
            for p in parts {
                let chunk = p.shape[axis] * inner
                out.append(contentsOf: p.data[(o * chunk)..<((o + 1) * chunk)])
            }
        }
        var newShape = first.shape
        newShape[axis] = parts.reduce(0) { $0 + $1.shape[axis] }
        return Tensor(shape: newShape, data: out)
    }

    /// Swaps two axes, copying the elements into the new order.
    public func transposed(_ a: Int, _ b: Int) -> Tensor {
        precondition(a < rank && b < rank, "[transposed] axes \(a), \(b) of \(shape)")
        if a == b { return self }
        var perm = Array(0..<rank)
        perm.swapAt(a, b)
        return permuted(perm)
    }

    public func permuted(_ perm: [Int]) -> Tensor {
        precondition(perm.sorted() == Array(0..<rank), "[permuted] \(perm) for rank \(rank)")
        let newShape = perm.map { shape[$0] }
        var srcStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { srcStrides[i] = srcStrides[i + 1] * shape[i + 1] }
        let strides = perm.map { srcStrides[$0] }
        var out = [Float](repeating: 0, count: count)
        var index = [Int](repeating: 0, count: rank)
        data.withUnsafeBufferPointer { src in
            for i in 0..<count {
                var offset = 0
                for d in 0..<rank { offset += index[d] * strides[d] }
                out[i] = src[offset]
                var d = rank - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < newShape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return Tensor(shape: newShape, data: out)
    }
}
