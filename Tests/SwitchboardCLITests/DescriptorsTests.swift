import Glibc
import Testing

@testable import SwitchboardCLI

@Suite struct DescriptorsTests {
    /// `serve` raises the soft open-file limit to the hard one and grows the descriptor table up front, in one
    /// step, so a burst of connections after a start does not wait on the kernel's table doublings.
    @Test func raisesTheSoftLimitAndGrowsTheTableInOneStep() throws {
        var limits = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limits) == 0)
        let hard = Int(clamping: limits.rlim_max)
        // The tests after this one get the soft limit they had.
        let original = limits
        defer {
            var restored = original
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &restored)
        }
        // One below the hard limit, so raising it is something to do (lowering the soft limit is always allowed).
        var lowered = limits
        lowered.rlim_cur = limits.rlim_max - 1
        #expect(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered) == 0)

        let before = try #require(Descriptors.tableSlots())
        let want = min(before * 4, hard)
        try #require(want > before, "the test process's table (\(before)) is already at the limit (\(hard))")
        let outcome = try #require(Descriptors.prepare(reserve: want))

        #expect(outcome.limitBefore == hard - 1)
        #expect(outcome.limit == hard)
        #expect(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limits) == 0)
        #expect(Int(limits.rlim_cur) == hard)
        #expect((outcome.tableSlots ?? 0) >= want)
        #expect((Descriptors.tableSlots() ?? 0) >= want)
    }
}
