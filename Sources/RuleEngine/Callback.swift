/// A closure to keep in a `Mutex`. Do not keep a bare function value there: a function stored as a generic
/// value is re-abstracted on every `withLock { $0 }`, and the inout's write-back stores the wrapped closure,
/// so each read adds two thunks and every later call walks the whole chain (measured: 75% of a core in
/// thunks after a few seconds of load). A struct around it is stored as it is.
package struct Callback<Input>: Sendable {
    package let call: @Sendable (Input) -> Void
    package init(_ call: @escaping @Sendable (Input) -> Void) { self.call = call }
}
