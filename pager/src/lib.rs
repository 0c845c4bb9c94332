//! Region map, internal and external pagers (in progress).
