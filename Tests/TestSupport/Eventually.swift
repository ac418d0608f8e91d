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
