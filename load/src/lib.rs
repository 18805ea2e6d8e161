//! What the load tool shares with other measurements: reading a process's CPU time and
//! memory from /proc (the operator's API-server benchmarks use it too).

pub mod procfs;
