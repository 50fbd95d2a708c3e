//! Helpers for the end-to-end tests in `tests/tests/`: locate the workspace binaries, start
//! real master and node processes on loopback ports, wait for conditions through the API.
