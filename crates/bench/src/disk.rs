//! What the machine's disks did, from `/proc/diskstats`: write requests,
//! bytes written and cache flushes (each `fsync`/`fdatasync` that reaches a
//! disk with a volatile cache is one), for `scheduler bench`'s "fsyncs per
//! step" figure. Whole machine: the store's flushes, PostgreSQL's,
//! RabbitMQ's, and anything else that wrote meanwhile.
//!
//! Only whole physical disks count (`/sys/block/NAME/device` exists): a
//! partition's, a device mapper's or a RAID's requests are also counted
//! on the disk under them, and loop, RAM and zram devices hold no store.
//! Parsing is pure and tested here.

use serde::Serialize;

/// A disk's counters, summed over the disks that count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskIo {
    /// Write requests completed.
    pub writes: u64,
    /// 512-byte sectors written.
    pub sectors_written: u64,
    /// Flush requests completed; `None` on a kernel older than 5.5, which
    /// does not count them.
    pub flushes: Option<u64>,
}

/// Sums the lines of `/proc/diskstats` whose device `counts`. Each line is
/// `major minor name` and then the counters: reads, reads merged, sectors
/// read, ms reading, writes, writes merged, sectors written, ms writing, in
/// progress, ms doing I/O, weighted ms, then (4.18+) four for discards and
/// (5.5+) flushes and ms flushing. `None` when no line counts: no figure
/// rather than zeros.
pub fn parse_diskstats(text: &str, counts: impl Fn(&str) -> bool) -> Option<DiskIo> {
    let mut io = DiskIo {
        flushes: Some(0),
        ..DiskIo::default()
    };
    let mut disks = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(counters)) = (fields.get(2), fields.get(3..)) else {
            continue;
        };
        if !counts(name) {
            continue;
        }
        let n = |i: usize| counters.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(writes), Some(sectors)) = (n(4), n(6)) else {
            continue;
        };
        disks += 1;
        io.writes += writes;
        io.sectors_written += sectors;
        io.flushes = match (io.flushes, n(15)) {
            (Some(sum), Some(f)) => Some(sum + f),
            _ => None,
        };
    }
    (disks > 0).then_some(io)
}

/// Whether `name` (as `/proc/diskstats` names it) is a whole physical disk.
fn physical_disk(name: &str) -> bool {
    std::path::Path::new("/sys/block").join(name).join("device").exists()
}

impl DiskIo {
    /// The physical disks' counters now; `None` if `/proc/diskstats`
    /// cannot be read or names no physical disk (a container may see none).
    pub fn read() -> Option<DiskIo> {
        parse_diskstats(&std::fs::read_to_string("/proc/diskstats").ok()?, physical_disk)
    }
}

/// The disks' work per module execution between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiskPerExecution {
    /// Cache flushes (`None`: the kernel does not count them).
    pub flushes: Option<f64>,
    pub write_requests: f64,
    pub written_kib: f64,
}

pub fn per_execution(before: DiskIo, after: DiskIo, executions: u64) -> DiskPerExecution {
    let each = |a: u64, b: u64| b.saturating_sub(a) as f64 / executions.max(1) as f64;
    DiskPerExecution {
        flushes: before.flushes.zip(after.flushes).map(|(a, b)| each(a, b)),
        write_requests: each(before.writes, after.writes),
        written_kib: each(before.sectors_written, after.sectors_written) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Read off a machine like ours (5.10+): a virtio disk, a partition of
    // another, loop and zram devices.
    const STATS: &str = "\
 254       0 vda 78555 12182 5800018 97366 1170390 65659 34022224 142333 2 96444 268069 19929 28 7261528 2427 483795 25942
 254      16 vdb 10 0 80 1 20 0 400 3 0 4 4 0 0 0 0 7 1
 254      17 vdb1 5 0 40 1 20 0 400 3 0 4 4 0 0 0 0 7 1
   7       0 loop0 12 0 100 0 0 0 0 0 0 4 0 0 0 0 0 0 0
 252       0 zram0 4 0 32 0 900 0 7200 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn sums_the_disks_that_count_and_nothing_else() {
        let io = parse_diskstats(STATS, |n| n == "vda" || n == "vdb");
        assert_eq!(
            io,
            Some(DiskIo {
                writes: 1_170_390 + 20,
                sectors_written: 34_022_224 + 400,
                flushes: Some(483_795 + 7),
            })
        );
    }

    #[test]
    fn an_older_kernel_counts_no_flushes() {
        // 4.18 to 5.4: discards, no flushes.
        let old = " 8 0 sda 1 0 8 0 3 0 24 0 0 0 0 0 0 0 0\n";
        let io = parse_diskstats(old, |_| true).unwrap();
        assert_eq!((io.writes, io.sectors_written, io.flushes), (3, 24, None));
        let p = per_execution(io, io, 1);
        assert_eq!(p.flushes, None);
    }

    #[test]
    fn per_execution_is_the_difference_over_the_executions() {
        let a = DiskIo {
            writes: 100,
            sectors_written: 1000,
            flushes: Some(10),
        };
        let b = DiskIo {
            writes: 140,
            sectors_written: 1800,
            flushes: Some(30),
        };
        let p = per_execution(a, b, 20);
        assert_eq!(p.flushes, Some(1.0));
        assert_eq!(p.write_requests, 2.0);
        assert_eq!(p.written_kib, 20.0);
    }

    #[test]
    fn a_line_it_cannot_read_is_skipped() {
        let io = parse_diskstats("garbage\n 254 0 vda x y\n 254 16 vdb 0 0 0 0 5 0 40 0 0 0 0\n", |_| {
            true
        });
        assert_eq!(io.map(|d| (d.writes, d.sectors_written)), Some((5, 40)));
    }

    #[test]
    fn no_disk_that_counts_is_no_figure_not_zeros() {
        assert_eq!(parse_diskstats(STATS, |n| n == "sda"), None);
        assert_eq!(parse_diskstats("", |_| true), None);
    }
}
