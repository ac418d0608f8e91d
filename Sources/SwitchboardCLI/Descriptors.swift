import Glibc

/// The process's file descriptors, made ready for a burst before `serve` opens its first connection.
///
/// Every webhook Kazoo sends arrives on a connection of its own, and every rule's HTTP call to a slow upstream
/// holds one more: a burst of 1,000 calls needs about 2,000 descriptors at once.
///
/// - The soft `RLIMIT_NOFILE` is raised to the hard one. Debian's default soft limit (1,024, systemd's too)
///   would refuse such a burst with "too many open files"; the hard limit is the administrator's.
/// - The kernel's descriptor table is grown once, now. Left alone it doubles as descriptors are opened, and
///   each doubling in a process with more than one thread waits for an RCU grace period
///   (`expand_fdtable` → `synchronize_rcu`), and every thread that needs a new descriptor meanwhile waits
///   for it. A trace of context switches (`perf record -e sched:sched_switch`) had both event loops asleep
///   for 11–32 ms at a time while the first 1,000 slow-upstream webhooks after a start arrived and the table
///   grew from 256 slots to 2,048 (`scripts/serve_bench.sh`, 5 December 2026); the table never shrinks, so
///   later bursts never paid it. It costs about 8 bytes of kernel memory per slot (about 130 KiB for
///   16,384), and no process memory.
enum Descriptors {
    /// Slots the table is grown to (or the descriptor limit, if lower).
    static let reserved = 16_384

    /// What `prepare` found and did.
    struct Outcome: Equatable {
        /// The soft limit before and after.
        var limitBefore: Int
        var limit: Int
        /// The table's slots afterwards (`FDSize` in /proc/self/status), or nil if it could not be read.
        var tableSlots: Int?
    }

    /// Raises the soft descriptor limit to the hard one and grows the table to `min(reserve, limit)` slots;
    /// nil if the limit cannot be read. Failures leave things as they were: the server still runs, with the
    /// old limit or the lazy growth.
    static func prepare(reserve: Int = reserved) -> Outcome? {
        var limits = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return nil }
        let before = Int(clamping: limits.rlim_cur)
        if limits.rlim_cur < limits.rlim_max {
            var raised = limits
            raised.rlim_cur = limits.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { limits = raised }
        }
        let limit = Int(clamping: limits.rlim_cur)
        // A descriptor numbered at least `top` makes the kernel size the table for it in one step;
        // F_DUPFD takes the lowest free number from `top` up, so no descriptor in use is touched.
        let top = min(reserve, limit) - 1
        let probe = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if probe >= 0 {
            if top > probe {
                let high = fcntl(probe, F_DUPFD_CLOEXEC, Int32(clamping: top))
                if high >= 0 { close(high) }
            }
            close(probe)
        }
        return Outcome(limitBefore: before, limit: limit, tableSlots: tableSlots())
    }

    /// The descriptor table's current size, from the `FDSize:` line of /proc/self/status.
    static func tableSlots() -> Int? {
        guard let file = fopen("/proc/self/status", "re") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.hasPrefix("FDSize:") {
                return Int(text.dropFirst("FDSize:".count).filter { !$0.isWhitespace })
            }
        }
        return nil
    }
}
