//! Loads programs into new tasks, demand-paged from the filesystem server (in progress).
