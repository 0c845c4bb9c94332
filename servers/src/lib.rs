//! The filesystem resource server: files as dataspaces, page cache, read-ahead, write-back, cleaning policy (in progress).
