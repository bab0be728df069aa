'use strict';
// Skip reasons for the tests that need what only some operating systems offer: `false` where the test
// can run, else the reason (node:test's `skip` option takes either). CI runs the suite on Linux (glibc
// and musl), macOS and Windows; everything not listed here runs on all of them.
const isLinux = process.platform === 'linux';
const isWindows = process.platform === 'win32';

module.exports = {
  /** Tests that send a child process SIGTERM and expect its handler (Koatty's terminus) to run. */
  NO_POSIX_SIGNALS: isWindows && 'Windows has no POSIX signals: child.kill("SIGTERM") ends the process without running its handlers',
  /** Tests that read a process's memory from /proc/<pid>/status. */
  NO_PROC_STATUS: !isLinux && `/proc/<pid>/status exists on Linux only (this is ${process.platform})`,
  /** Tests that need the kernel to spread a port's new connections over several SO_REUSEPORT listeners. */
  NO_REUSEPORT_BALANCING: !isLinux && (isWindows
    ? 'Windows has no SO_REUSEPORT (reusePort is ignored there)'
    : `only Linux spreads new connections over SO_REUSEPORT listeners (this is ${process.platform})`),
};
