//! The server's resident memory and CPU time, read from /proc. A hub may be
//! several processes (nginx: a master and its workers), so a sample sums the
//! process and all its descendants.

use std::{collections::HashMap, fs};

use anyhow::Context;

/// Reads one server's process tree.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    root: u32,
    ticks_per_sec: f64,
}

/// Memory and CPU of the tree at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Sum of VmRSS, in KiB.
    pub rss_kib: u64,
    /// Sum of user + system time, in seconds.
    pub cpu_secs: f64,
    /// Processes in the tree.
    pub processes: usize,
}

impl ServerProbe {
    /// A probe of `pid` and its descendants.
    pub fn new(pid: u32) -> Self {
        // SAFETY: sysconf reads a constant of the running system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ServerProbe { root: pid, ticks_per_sec: if ticks > 0 { ticks as f64 } else { 100.0 } }
    }

    /// Reads memory and CPU now.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let mut sample = Sample { rss_kib: 0, cpu_secs: 0.0, processes: 0 };
        for pid in tree(self.root)? {
            // A process may exit between listing and reading: skip it.
            let (Ok(status), Ok(stat)) = (fs::read_to_string(format!("/proc/{pid}/status")), fs::read_to_string(format!("/proc/{pid}/stat"))) else {
                continue;
            };
            sample.rss_kib += vm_rss_kib(&status).unwrap_or(0);
            if let Some(ticks) = cpu_ticks(&stat) {
                sample.cpu_secs += ticks as f64 / self.ticks_per_sec;
            }
            sample.processes += 1;
        }
        anyhow::ensure!(sample.processes > 0, "server process {} is gone", self.root);
        Ok(sample)
    }
}

/// `root` and every process descended from it.
fn tree(root: u32) -> anyhow::Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parent) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut next = 0;
    while next < out.len() {
        if let Some(kids) = children.get(&out[next]) {
            out.extend(kids);
        }
        next += 1;
    }
    Ok(out)
}

/// The fields of /proc/PID/stat after the command name, which may itself
/// contain spaces and parentheses.
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

fn parent(stat: &str) -> Option<u32> {
    fields_after_comm(stat)?.get(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15 of stat), in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let fields = fields_after_comm(stat)?;
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "42 (nginx: worker (x)) S 7 42 42 0 -1 4194560 10 0 0 0 150 25 0 0 20 0 1 0 5 100 200";
        assert_eq!(parent(stat), Some(7));
        assert_eq!(cpu_ticks(stat), Some(175));
    }

    #[test]
    fn samples_this_process() {
        let sample = ServerProbe::new(std::process::id()).sample().unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.processes >= 1);
    }
}
