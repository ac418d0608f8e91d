/// Waits (up to `seconds`) until `condition` holds, checking every few milliseconds; returns whether it did.
/// Tests wait for conditions, never for fixed sleeps.
public func eventually(_ seconds: Double = 20, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

/// `eventually` for a condition that must await (an HTTP request, an actor).
public func eventuallyAsync(_ seconds: Double = 20, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

/// The time limit of an HTTP call a test expects to be answered (or refused), where the limit is not what the
/// test checks. `make test` starts every suite at once, and synchronous tests hold the threads Swift's tasks
/// share (two on a 2-core machine) for seconds at the start, so a loopback call's continuations can wait that
/// long in line: 5 s ran out in CI. Long enough for a working call on a busy machine; a hang still fails.
public let answerTimeout = Duration.seconds(60)
