//! The process's open-file limit, which bounds how many streams a node can
//! hold: every stream is a socket. Read and raised through the `rlimit`
//! crate, so no `unsafe` call of our own touches the system's limits.

/// What a process is assumed to have when the limit cannot be read.
const FALLBACK: usize = 1024;

/// Raises the soft open-file limit to the hard one (as Go's runtime does):
/// a hub's capacity is its sockets, and distributions ship a soft limit of
/// 1,024. Returns the limit now in force.
pub fn raise_open_files() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            open_files()
        }
    }
}

/// The soft open-file limit in force.
pub fn open_files() -> usize {
    rlimit::Resource::NOFILE.get().map_or(FALLBACK, |(soft, _hard)| usize::try_from(soft).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_never_lowers_the_limit_and_reads_back_what_is_in_force() {
        let before = super::open_files();
        let raised = super::raise_open_files();
        assert!(raised >= before);
        assert_eq!(super::open_files(), raised);
    }
}
